//! Scoring: a company's upsell rule, as configuration, turns each customer's HubSpot data
//! into a score with an explanation line per criterion that counted.
//!
//! Pure functions over in-memory data, so the benchmark measures exactly what runs.

use crate::store::CustomerDeal;
use gtm_config::{Criterion, CriterionOp, UpsellRule};
use serde_json::Value;
use std::collections::BTreeMap;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The deal property naming the customer contact.
pub const CONTACT_EMAIL: &str = "gomark_contact_email";
pub const CONTACT_FIRST_NAME: &str = "gomark_contact_first_name";
pub const CONTACT_TIME_ZONE: &str = "gomark_contact_time_zone";

/// One customer (a contact across their deals), as the rules see them.
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    pub email: String,
    /// The deal the customer is scored on: their most recently closed won deal, else
    /// their most recently modified one.
    pub deal_id: String,
    pub deal_name: String,
    pub first_name: Option<String>,
    pub time_zone: Option<String>,
    /// The scored deal's properties (`amount`, `closedate`, `dealstage`, `pipeline`,
    /// `hubspot_owner_id`, `dealname`, every `gomark_*` one) plus the customer's totals:
    /// `gomark.won_deals`, `gomark.won_amount`, `gomark.open_deals`.
    pub properties: BTreeMap<String, String>,
    /// The template variables an enrollment carries besides `dealName` (`amount`,
    /// `renewalDate`, `productUsage`, `seats`, `tier`), kept when [`Customer::slim`] drops
    /// the properties.
    pub variables: Vec<(&'static str, String)>,
    /// Close date of the latest won deal, if any.
    pub won_close_ms: Option<i64>,
    pub open_deals: u32,
    /// A deal of theirs carries the escalation flag.
    pub escalated: bool,
}

/// Groups `deals` into customers by contact email, as `rule` defines won, lost and open.
pub fn customers(deals: &[CustomerDeal], rule: &UpsellRule) -> Vec<Customer> {
    // Sorting indices by email groups each customer's deals together and yields customers
    // in a stable order, without a map of vectors.
    let mut order: Vec<&CustomerDeal> = deals.iter().collect();
    order.sort_unstable_by(|a, b| a.email.cmp(&b.email).then_with(|| a.deal_id.cmp(&b.deal_id)));
    order.chunk_by(|a, b| a.email == b.email).filter_map(|group| customer_of(group, rule)).collect()
}

/// Groups a stream of deals ordered by email into customers one at a time, so a run holds
/// one customer's deals at once, not the company's (the store streams them in that order).
#[derive(Debug, Default)]
pub struct Grouper {
    group: Vec<CustomerDeal>,
}

impl Grouper {
    /// Adds the next deal; returns the previous customer once their deals are complete.
    pub fn push(&mut self, deal: CustomerDeal, rule: &UpsellRule) -> Option<Customer> {
        let done = match self.group.first() {
            Some(first) if first.email != deal.email => self.finish(rule),
            _ => None,
        };
        self.group.push(deal);
        done
    }

    /// The last customer.
    pub fn finish(&mut self, rule: &UpsellRule) -> Option<Customer> {
        let group: Vec<&CustomerDeal> = self.group.iter().collect();
        let customer = customer_of(&group, rule);
        self.group.clear();
        customer
    }
}

/// Template variable ← deal property, for what an enrollment carries.
const VARIABLE_PROPERTIES: [(&str, &str); 5] = [
    ("amount", "amount"),
    ("renewalDate", "gomark_renewal_date"),
    ("productUsage", "gomark_product_usage"),
    ("seats", "gomark_seats"),
    ("tier", "gomark_customer_tier"),
];

impl Customer {
    /// Drops the properties, which only scoring needs: after scoring, a run keeps each
    /// customer with just what an enrollment carries, so 100,000 customers fit in little
    /// memory.
    pub fn slim(&mut self) {
        self.properties = BTreeMap::new();
    }
}

/// One customer from all of their deals (sharing an email).
fn customer_of(group: &[&CustomerDeal], rule: &UpsellRule) -> Option<Customer> {
    let won = |d: &CustomerDeal| rule.won_stages.iter().any(|s| s == &d.stage);
    let lost = |d: &CustomerDeal| rule.lost_stages.iter().any(|s| s == &d.stage);
    let escalation = &rule.guardrails.escalation_property;
    let (mut won_deals, mut won_amount, mut open_deals, mut escalated) = (0u32, 0.0f64, 0u32, false);
    let mut latest_won: Option<&CustomerDeal> = None;
    for d in group.iter().copied() {
        if won(d) {
            won_deals += 1;
            won_amount += d.amount.unwrap_or(0.0);
            if latest_won.is_none_or(|l| (d.close_date_ms, d.deal_id.as_str()) > (l.close_date_ms, l.deal_id.as_str()))
            {
                latest_won = Some(d);
            }
        } else if !lost(d) {
            open_deals += 1;
        }
        escalated |= d
            .properties
            .get(escalation)
            .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "yes" | "1"));
    }
    let primary =
        latest_won.or_else(|| group.iter().copied().max_by_key(|d| (d.last_modified_ms, d.deal_id.as_str())))?;
    let mut properties = primary.properties.clone();
    properties.insert("dealname".into(), primary.deal_name.clone());
    properties.insert("dealstage".into(), primary.stage.clone());
    properties.insert("hubspot_owner_id".into(), primary.owner_id.clone());
    if let Some(amount) = primary.amount {
        properties.insert("amount".into(), amount.to_string());
    }
    if primary.close_date_ms > 0 {
        properties.insert("closedate".into(), primary.close_date_ms.to_string());
    }
    properties.insert("gomark.won_deals".into(), won_deals.to_string());
    properties.insert("gomark.won_amount".into(), won_amount.to_string());
    properties.insert("gomark.open_deals".into(), open_deals.to_string());
    let variables =
        VARIABLE_PROPERTIES.iter().filter_map(|(var, prop)| properties.get(*prop).map(|v| (*var, v.clone()))).collect();
    Some(Customer {
        email: primary.email.clone(),
        deal_id: primary.deal_id.clone(),
        deal_name: primary.deal_name.clone(),
        first_name: primary.properties.get(CONTACT_FIRST_NAME).cloned(),
        time_zone: primary.properties.get(CONTACT_TIME_ZONE).cloned(),
        properties,
        variables,
        won_close_ms: latest_won.map(|d| d.close_date_ms),
        open_deals,
        escalated,
    })
}

/// A customer's score and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Index into the customers slice that was ranked.
    pub customer: usize,
    pub score: f64,
    /// One line per criterion that gave points: `(explanation, points)`.
    pub reasons: Vec<(String, f64)>,
}

fn number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

/// A HubSpot date: epoch milliseconds, or `YYYY-MM-DD`, or RFC 3339.
pub fn date_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn same(actual: &str, expected: &Value) -> bool {
    match (number(actual), expected.as_f64()) {
        (Some(a), Some(e)) => (a - e).abs() < 1e-9,
        _ => actual.trim().eq_ignore_ascii_case(value_text(expected).trim()),
    }
}

fn op_text(op: CriterionOp) -> &'static str {
    match op {
        CriterionOp::Eq => "=",
        CriterionOp::Neq => "≠",
        CriterionOp::In => "in",
        CriterionOp::Gt => ">",
        CriterionOp::Gte => "≥",
        CriterionOp::Lt => "<",
        CriterionOp::Lte => "≤",
        CriterionOp::Exists => "is set",
        CriterionOp::WithinDaysPast => "within the last days:",
        CriterionOp::WithinDaysAhead => "within the next days:",
        CriterionOp::Linear => "×",
    }
}

/// The points `c` gives for `value` (the property's text, if set) at `now_ms`.
pub fn points(c: &Criterion, value: Option<&str>, now_ms: i64) -> f64 {
    let Some(v) = value.filter(|v| !v.trim().is_empty()) else { return 0.0 };
    let operand = c.value.as_ref();
    let num = || number(v);
    let bound = || operand.and_then(Value::as_f64);
    let holds = match c.op {
        CriterionOp::Exists => true,
        CriterionOp::Eq => operand.is_some_and(|e| same(v, e)),
        CriterionOp::Neq => operand.is_some_and(|e| !same(v, e)),
        CriterionOp::In => operand.and_then(Value::as_array).is_some_and(|list| list.iter().any(|e| same(v, e))),
        CriterionOp::Gt => matches!((num(), bound()), (Some(a), Some(b)) if a > b),
        CriterionOp::Gte => matches!((num(), bound()), (Some(a), Some(b)) if a >= b),
        CriterionOp::Lt => matches!((num(), bound()), (Some(a), Some(b)) if a < b),
        CriterionOp::Lte => matches!((num(), bound()), (Some(a), Some(b)) if a <= b),
        CriterionOp::WithinDaysPast => match (date_ms(v), bound()) {
            (Some(at), Some(days)) => at <= now_ms && (now_ms - at) as f64 <= days * DAY_MS as f64,
            _ => false,
        },
        CriterionOp::WithinDaysAhead => match (date_ms(v), bound()) {
            (Some(at), Some(days)) => at >= now_ms && (at - now_ms) as f64 <= days * DAY_MS as f64,
            _ => false,
        },
        CriterionOp::Linear => {
            let raw = num().map_or(0.0, |n| n * c.points);
            return c.max_points.map_or(raw, |m| raw.min(m)).max(0.0);
        }
    };
    if holds { c.points } else { 0.0 }
}

fn explain(c: &Criterion, value: &str) -> String {
    let what = match (c.op, &c.value) {
        (CriterionOp::Exists | CriterionOp::Linear, _) | (_, None) => {
            format!("{} {} ({value})", c.property, op_text(c.op))
        }
        (_, Some(operand)) => format!("{} {} {} ({value})", c.property, op_text(c.op), value_text(operand)),
    };
    match &c.why {
        Some(why) => format!("{why}: {what}"),
        None => what,
    }
}

/// Scores one customer.
pub fn score(rule: &UpsellRule, customer: &Customer, index: usize, now_ms: i64) -> Scored {
    let mut total = 0.0;
    let mut reasons = Vec::new();
    for c in &rule.scoring {
        let value = customer.properties.get(&c.property).map(String::as_str);
        let p = points(c, value, now_ms);
        if p != 0.0 {
            total += p;
            reasons.push((explain(c, value.unwrap_or_default()), p));
        }
    }
    Scored { customer: index, score: total, reasons }
}

/// Every customer scored, highest first (ties: by email, so runs are reproducible).
pub fn rank(rule: &UpsellRule, customers: &[Customer], now_ms: i64) -> Vec<Scored> {
    let mut scored: Vec<Scored> = customers.iter().enumerate().map(|(i, c)| score(rule, c, i, now_ms)).collect();
    sort_ranked(&mut scored, customers);
    scored
}

/// Orders scores highest first (ties: by email).
pub fn sort_ranked(scored: &mut [Scored], customers: &[Customer]) {
    scored.sort_by(|a, b| {
        b.score.total_cmp(&a.score).then_with(|| customers[a.customer].email.cmp(&customers[b.customer].email))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(scoring: serde_json::Value) -> UpsellRule {
        serde_json::from_value(serde_json::json!({"key": "r", "cadence": "c", "scoring": scoring})).expect("rule")
    }

    fn deal(id: &str, email: &str, stage: &str, amount: f64, close: i64, props: &[(&str, &str)]) -> CustomerDeal {
        CustomerDeal {
            deal_id: id.into(),
            email: email.into(),
            deal_name: format!("Deal {id}"),
            stage: stage.into(),
            amount: Some(amount),
            close_date_ms: close,
            owner_id: "7".into(),
            properties: props.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            last_modified_ms: close,
        }
    }

    #[test]
    fn every_operator_scores_and_explains_itself() {
        let now = 1_800_000_000_000;
        let r = rule(serde_json::json!([
            {"property": "amount", "op": "linear", "points": 0.001, "maxPoints": 25, "why": "size"},
            {"property": "gomark_renewal_date", "op": "withinDaysAhead", "value": 30, "points": 20},
            {"property": "closedate", "op": "withinDaysPast", "value": 10, "points": 5},
            {"property": "gomark_customer_tier", "op": "in", "value": ["gold", "silver"], "points": 3},
            {"property": "hubspot_owner_id", "op": "eq", "value": 7, "points": 2},
            {"property": "gomark_seats", "op": "exists", "points": 1},
            {"property": "dealstage", "op": "neq", "value": "closedwon", "points": 100}
        ]));
        let renewal = (now + 10 * DAY_MS).to_string();
        let deals = [deal(
            "1",
            "a@x.example",
            "closedwon",
            40_000.0,
            now - 3 * DAY_MS,
            &[("gomark_renewal_date", &renewal), ("gomark_customer_tier", "Gold"), ("gomark_seats", "12")],
        )];
        let found = customers(&deals, &r);
        let s = score(&r, &found[0], 0, now);
        assert_eq!(s.score, 25.0 + 20.0 + 5.0 + 3.0 + 2.0 + 1.0, "{:?}", s.reasons);
        assert_eq!(s.reasons.len(), 6, "the neq that did not hold gives no line");
        assert!(s.reasons[0].0.starts_with("size: amount × (40000)"), "{:?}", s.reasons);
        let past = (now - 40 * DAY_MS).to_string();
        let mut far = deals[0].clone();
        far.properties.insert("gomark_renewal_date".into(), past);
        let c = customers(&[far], &r);
        assert_eq!(score(&r, &c[0], 0, now).score, 25.0 + 5.0 + 3.0 + 2.0 + 1.0, "a past renewal is not ahead");
    }

    #[test]
    fn customers_are_scored_on_their_latest_won_deal_with_totals_and_open_deals() {
        let now = 1_800_000_000_000;
        let r = rule(serde_json::json!([{"property": "gomark.won_amount", "op": "gte", "value": 150, "points": 1}]));
        let deals = [
            deal("1", "a@x.example", "closedwon", 100.0, now - 50 * DAY_MS, &[]),
            deal("2", "a@x.example", "closedwon", 60.0, now - 5 * DAY_MS, &[("gomark_escalation", "true")]),
            deal("3", "a@x.example", "qualifiedtobuy", 10.0, 0, &[]),
            deal("4", "b@x.example", "closedlost", 10.0, now, &[]),
        ];
        let c = customers(&deals, &r);
        assert_eq!(c.iter().map(|c| c.email.as_str()).collect::<Vec<_>>(), ["a@x.example", "b@x.example"]);
        assert_eq!((c[0].deal_id.as_str(), c[0].open_deals, c[0].escalated), ("2", 1, true));
        assert_eq!(c[0].won_close_ms, Some(now - 5 * DAY_MS));
        assert_eq!(score(&r, &c[0], 0, now).score, 1.0, "160 won in total");
        assert_eq!((c[1].won_close_ms, c[1].open_deals), (None, 0), "lost is neither won nor open");
        let ranked = rank(&r, &c, now);
        assert_eq!(ranked.iter().map(|s| s.customer).collect::<Vec<_>>(), [0, 1]);
    }
}

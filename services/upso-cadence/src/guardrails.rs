//! Guardrails: who of the ranked customers may be enrolled now. Whatever the score says,
//! nobody is enrolled twice in a running cadence, opt-outs and the suppression list are
//! honoured, recently touched contacts rest, daily caps hold, quiet hours are respected,
//! and customers with an open deal or an escalation are left alone.
//!
//! Pure: the caller gathers the facts ([`GuardFacts`]) and records the outcome.

use crate::rules::{Customer, Scored};
use gtm_config::UpsellRule;
use gtm_config::outreach::{is_suppressed, parse_hhmm, utc_offset_minutes};
use std::collections::{HashMap, HashSet};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Why a customer was not enrolled. The names are the API's `skip_reason`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    OutsideTriggerWindow,
    BelowMinScore,
    AlreadyEnrolled,
    OptedOut,
    Suppressed,
    RecentlyTouched,
    OpenDeal,
    Escalation,
    QuietHours,
    MailboxCap,
    CompanyCap,
    RunLimit,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::OutsideTriggerWindow => "outside_trigger_window",
            SkipReason::BelowMinScore => "below_min_score",
            SkipReason::AlreadyEnrolled => "already_enrolled",
            SkipReason::OptedOut => "opted_out",
            SkipReason::Suppressed => "suppressed",
            SkipReason::RecentlyTouched => "recently_touched",
            SkipReason::OpenDeal => "open_deal",
            SkipReason::Escalation => "escalation",
            SkipReason::QuietHours => "quiet_hours",
            SkipReason::MailboxCap => "mailbox_cap",
            SkipReason::CompanyCap => "company_cap",
            SkipReason::RunLimit => "run_limit",
        }
    }

    /// Not candidates at all: not recorded as decisions (they would swamp the log).
    pub fn is_eligibility(self) -> bool {
        matches!(self, SkipReason::OutsideTriggerWindow | SkipReason::BelowMinScore)
    }
}

/// What the guardrails need to know, gathered once per run.
#[derive(Debug, Clone, Default)]
pub struct GuardFacts {
    /// Running (active or paused) in this rule's cadence, lower case.
    pub running: HashSet<String>,
    pub opted_out: HashSet<String>,
    pub suppression_list: Vec<String>,
    /// Last email (or enrollment) per contact across the company's cadences, epoch ms.
    pub last_touch: HashMap<String, i64>,
    /// `(mailbox id, enrollments today)`, in the vendor's order.
    pub mailboxes: Vec<(String, u32)>,
    /// Enrollments today across the company.
    pub company_today: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Enroll { mailbox_id: String },
    Skip { reason: SkipReason, detail: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub scored: Scored,
    pub outcome: Outcome,
}

/// Minutes after local midnight at `now_ms` in `zone` (unknown zones: `default_zone`).
fn local_minutes(now_ms: i64, zone: Option<&str>, default_zone: &str) -> i64 {
    let offset = zone.and_then(utc_offset_minutes).or_else(|| utc_offset_minutes(default_zone)).unwrap_or(0);
    (now_ms.div_euclid(60_000) + i64::from(offset)).rem_euclid(24 * 60)
}

fn in_quiet_hours(rule: &UpsellRule, customer: &Customer, now_ms: i64) -> Option<String> {
    let q = rule.guardrails.quiet_hours.as_ref()?;
    let (start, end) = (i64::from(parse_hhmm(&q.start)?), i64::from(parse_hhmm(&q.end)?));
    let local = local_minutes(now_ms, customer.time_zone.as_deref(), &q.default_time_zone);
    let quiet = if start < end { local >= start && local < end } else { local >= start || local < end };
    quiet.then(|| {
        let zone = customer.time_zone.clone().unwrap_or_else(|| q.default_time_zone.clone());
        format!("{:02}:{:02} in {zone} is within quiet hours {}–{}", local / 60, local % 60, q.start, q.end)
    })
}

/// Decides for each ranked customer, in rank order, updating `facts` as enrollments are
/// granted (caps fill up, the contact becomes running).
pub fn decide(
    rule: &UpsellRule,
    customers: &[Customer],
    ranked: &[Scored],
    facts: &mut GuardFacts,
    now_ms: i64,
) -> Vec<Decision> {
    let g = &rule.guardrails;
    let gap_ms = i64::from(g.min_days_since_last_touch) * DAY_MS;
    let window = rule.closed_won_days_ago;
    // Enrollments granted in this run (only the iterations that enroll count).
    struct Run {
        granted: u32,
    }
    let mut run = Run { granted: 0 };
    let mut out = Vec::with_capacity(ranked.len());
    for s in ranked {
        let c = &customers[s.customer];
        let skip = |reason: SkipReason, detail: String| Outcome::Skip { reason, detail };
        let outcome = 'decide: {
            let Some(closed) = c.won_close_ms else {
                break 'decide skip(SkipReason::OutsideTriggerWindow, "no won deal".into());
            };
            let days_ago = (now_ms - closed).div_euclid(DAY_MS);
            if days_ago < i64::from(window.min) || days_ago > i64::from(window.max) {
                break 'decide skip(
                    SkipReason::OutsideTriggerWindow,
                    format!("won {days_ago} days ago; the rule wants {}–{}", window.min, window.max),
                );
            }
            if s.score < rule.min_score {
                break 'decide skip(SkipReason::BelowMinScore, format!("score {} < {}", s.score, rule.min_score));
            }
            if facts.running.contains(&c.email) {
                break 'decide skip(SkipReason::AlreadyEnrolled, "already running in this cadence".into());
            }
            if facts.opted_out.contains(&c.email) {
                break 'decide skip(SkipReason::OptedOut, "opted out in Upso".into());
            }
            if is_suppressed(&facts.suppression_list, &c.email) {
                break 'decide skip(SkipReason::Suppressed, "on the portfolio suppression list".into());
            }
            if let Some(&at) = facts.last_touch.get(&c.email)
                && now_ms - at < gap_ms
            {
                let days = (now_ms - at).div_euclid(DAY_MS);
                break 'decide skip(
                    SkipReason::RecentlyTouched,
                    format!("last touched {days} days ago; the minimum gap is {} days", g.min_days_since_last_touch),
                );
            }
            if g.skip_open_deals && c.open_deals > 0 {
                break 'decide skip(SkipReason::OpenDeal, format!("{} open deal(s)", c.open_deals));
            }
            if c.escalated {
                break 'decide skip(SkipReason::Escalation, format!("{} is set", g.escalation_property));
            }
            if let Some(detail) = in_quiet_hours(rule, c, now_ms) {
                break 'decide skip(SkipReason::QuietHours, detail);
            }
            if run.granted >= rule.max_per_run {
                break 'decide skip(SkipReason::RunLimit, format!("{} enrollments per run", rule.max_per_run));
            }
            if facts.company_today >= g.company_daily_cap {
                break 'decide skip(SkipReason::CompanyCap, format!("{} enrollments per day", g.company_daily_cap));
            }
            // The least used mailbox with room: spreads the day's enrollments evenly.
            let Some(mailbox) = facts
                .mailboxes
                .iter_mut()
                .filter(|(_, used)| *used < g.mailbox_daily_cap)
                .min_by_key(|(_, used)| *used)
            else {
                break 'decide skip(SkipReason::MailboxCap, format!("every mailbox has {} today", g.mailbox_daily_cap));
            };
            mailbox.1 += 1;
            facts.company_today += 1;
            facts.running.insert(c.email.clone());
            run.granted += 1;
            Outcome::Enroll { mailbox_id: mailbox.0.clone() }
        };
        out.push(Decision { scored: s.clone(), outcome });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{customers, rank};
    use crate::store::CustomerDeal;

    const DAY: i64 = DAY_MS;
    // 2026-11-23 12:00 UTC, a Monday.
    const NOW: i64 = 1_795_435_200_000;

    fn rule(guardrails: serde_json::Value) -> UpsellRule {
        serde_json::from_value(serde_json::json!({
            "key": "r", "cadence": "c", "maxPerRun": 3,
            "scoring": [{"property": "amount", "op": "linear", "points": 1}],
            "guardrails": guardrails
        }))
        .expect("rule")
    }

    fn deal(email: &str, amount: f64, props: &[(&str, &str)]) -> CustomerDeal {
        CustomerDeal {
            deal_id: email.into(),
            email: email.into(),
            deal_name: "D".into(),
            stage: "closedwon".into(),
            amount: Some(amount),
            close_date_ms: NOW - 10 * DAY,
            owner_id: String::new(),
            properties: props.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            last_modified_ms: NOW,
        }
    }

    fn outcomes(
        rule: &UpsellRule,
        deals: &[CustomerDeal],
        facts: &mut GuardFacts,
    ) -> Vec<(String, Option<SkipReason>)> {
        let c = customers(deals, rule);
        let ranked = rank(rule, &c, NOW);
        decide(rule, &c, &ranked, facts, NOW)
            .into_iter()
            .map(|d| {
                let reason = match d.outcome {
                    Outcome::Enroll { .. } => None,
                    Outcome::Skip { reason, .. } => Some(reason),
                };
                (c[d.scored.customer].email.clone(), reason)
            })
            .collect()
    }

    fn facts(mailboxes: &[(&str, u32)]) -> GuardFacts {
        GuardFacts {
            mailboxes: mailboxes.iter().map(|(m, n)| ((*m).to_owned(), *n)).collect(),
            ..GuardFacts::default()
        }
    }

    #[test]
    fn quiet_hours_are_read_in_the_contacts_time_zone() {
        let r = rule(serde_json::json!({"quietHours": {"start": "20:00", "end": "08:00"}}));
        // 12:00 UTC is 21:00 at +09:00 (quiet) and 07:00 at -05:00 (quiet), 12:00 in UTC (fine).
        let deals = [
            deal("tokyo@x.example", 30.0, &[("gomark_contact_time_zone", "+09:00")]),
            deal("lima@x.example", 20.0, &[("gomark_contact_time_zone", "-05:00")]),
            deal("london@x.example", 10.0, &[]),
        ];
        let got = outcomes(&r, &deals, &mut facts(&[("m1", 0)]));
        assert_eq!(
            got,
            [
                ("tokyo@x.example".into(), Some(SkipReason::QuietHours)),
                ("lima@x.example".into(), Some(SkipReason::QuietHours)),
                ("london@x.example".into(), None),
            ]
        );
    }

    #[test]
    fn escalations_and_caps_hold_whatever_the_score() {
        let r = rule(serde_json::json!({"mailboxDailyCap": 2, "companyDailyCap": 10}));
        let deals = [
            deal("esc@x.example", 100.0, &[("gomark_escalation", "true")]),
            deal("a@x.example", 90.0, &[]),
            deal("b@x.example", 80.0, &[]),
            deal("c@x.example", 70.0, &[]),
            deal("d@x.example", 60.0, &[]),
        ];
        // One mailbox already sent one today: room for one more; the second has two.
        let mut f = facts(&[("m1", 1), ("m2", 0)]);
        let got = outcomes(&r, &deals, &mut f);
        assert_eq!(got[0].1, Some(SkipReason::Escalation));
        assert_eq!(got[1..4].iter().filter(|(_, r)| r.is_none()).count(), 3, "{got:?}");
        assert_eq!(got[4].1, Some(SkipReason::RunLimit), "maxPerRun 3");
        assert_eq!(f.mailboxes, [("m1".to_owned(), 2), ("m2".to_owned(), 2)], "the least used mailbox first");
        let mut full = facts(&[("m1", 2)]);
        let got = outcomes(&r, &deals[1..2], &mut full);
        assert_eq!(got[0].1, Some(SkipReason::MailboxCap));
    }
}

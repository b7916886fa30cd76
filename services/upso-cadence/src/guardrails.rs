//! Guardrails: who of the ranked customers may be enrolled now. Whatever the score says,
//! nobody is enrolled twice in a running cadence, opt-outs and the suppression lists (the
//! configured one and the portfolio's) are honoured, recently touched contacts rest, the
//! portfolio's rules for a person hold across companies (cap, gap, exclusivity), daily
//! and rolling caps hold, holidays and quiet hours are respected (in named time zones,
//! daylight saving included), and customers with an open deal or an escalation are left
//! alone.
//!
//! Pure: the caller gathers the facts ([`GuardFacts`]) and records the outcome. The caps
//! are checked here for the explanation (and the dry run), and again, exactly, when an
//! enrollment is reserved ([`recheck`]), because another replica may have enrolled since.

use crate::portfolio::{PortfolioFacts, Suppression, Touch, person};
use crate::rules::{Customer, Scored};
use gtm_config::outreach::{is_suppressed, parse_hhmm};
use gtm_config::zones::{self, TimeZone};
use gtm_config::{Guardrails, PortfolioContact, UpsellRule};
use std::collections::{BTreeSet, HashMap, HashSet};

const DAY_MS: i64 = 24 * 3600 * 1000;
const HOUR_MS: i64 = 3600 * 1000;

/// Why a customer was not enrolled. The names are the API's `skip_reason`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    OutsideTriggerWindow,
    BelowMinScore,
    AlreadyEnrolled,
    OptedOut,
    Suppressed,
    PortfolioSuppressed,
    RecentlyTouched,
    PortfolioGap,
    PortfolioCap,
    PortfolioExclusive,
    OpenDeal,
    Escalation,
    Holiday,
    QuietHours,
    MailboxCap,
    CompanyCap,
    RollingCap,
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
            SkipReason::PortfolioSuppressed => "portfolio_suppressed",
            SkipReason::RecentlyTouched => "recently_touched",
            SkipReason::PortfolioGap => "portfolio_gap",
            SkipReason::PortfolioCap => "portfolio_cap",
            SkipReason::PortfolioExclusive => "portfolio_exclusive",
            SkipReason::OpenDeal => "open_deal",
            SkipReason::Escalation => "escalation",
            SkipReason::Holiday => "holiday",
            SkipReason::QuietHours => "quiet_hours",
            SkipReason::MailboxCap => "mailbox_cap",
            SkipReason::CompanyCap => "company_cap",
            SkipReason::RollingCap => "rolling_cap",
            SkipReason::RunLimit => "run_limit",
        }
    }

    /// Not candidates at all: not recorded as decisions (they would swamp the log).
    pub fn is_eligibility(self) -> bool {
        matches!(self, SkipReason::OutsideTriggerWindow | SkipReason::BelowMinScore)
    }
}

/// A skip: the rule, in words, and the company whose touch (or opt-out) caused it, when
/// another company's action did.
#[derive(Debug, Clone, PartialEq)]
pub struct Skip {
    pub reason: SkipReason,
    pub detail: String,
    pub caused_by: String,
}

fn skip(reason: SkipReason, detail: String) -> Skip {
    Skip { reason, detail, caused_by: String::new() }
}

/// The company's calendar, resolved: its zone (caps' days, holidays) and holidays.
#[derive(Debug, Clone)]
pub struct Calendar {
    pub zone: TimeZone,
    pub zone_name: String,
    pub holidays: BTreeSet<jiff::civil::Date>,
}

impl Default for Calendar {
    fn default() -> Self {
        Self { zone: TimeZone::UTC, zone_name: "UTC".into(), holidays: BTreeSet::new() }
    }
}

impl Calendar {
    /// From the applied configuration (validated by gtm-config; an unknown zone here means
    /// a peer on another version, and is refused rather than guessed).
    pub fn from_config(c: &gtm_config::CompanyCalendar) -> Option<Self> {
        let zone_name = c.time_zone.clone().unwrap_or_else(|| "UTC".into());
        Some(Self {
            zone: zones::zone(&zone_name)?,
            zone_name,
            holidays: c.holidays.iter().filter_map(|d| zones::parse_date(d)).collect(),
        })
    }

    /// The instant the company's current calendar day began.
    pub fn day_start_ms(&self, now_ms: i64) -> i64 {
        zones::day_start_ms(now_ms, &self.zone)
    }

    fn holiday(&self, now_ms: i64) -> Option<String> {
        let today = zones::local(now_ms, &self.zone).date();
        self.holidays.contains(&today).then(|| format!("{today} is a company holiday ({})", self.zone_name))
    }
}

/// What the guardrails need to know, gathered once per run.
#[derive(Debug, Clone, Default)]
pub struct GuardFacts {
    pub company_id: String,
    /// Running (active or paused) in this rule's cadence, lower case.
    pub running: HashSet<String>,
    pub opted_out: HashSet<String>,
    pub suppression_list: Vec<String>,
    /// Last email (or enrollment) per contact across the company's cadences, epoch ms.
    pub last_touch: HashMap<String, i64>,
    /// `(mailbox id, enrollments today)`, in the vendor's order.
    pub mailboxes: Vec<(String, u32)>,
    /// Enrollments today (the company's calendar day) across the company.
    pub company_today: u32,
    /// Enrollments of the company within each of the rule's rolling caps, in its order.
    pub rolling: Vec<u32>,
    /// The mailbox the cadence names as its sender, if any.
    pub sender: Option<String>,
    pub calendar: Calendar,
    pub portfolio: PortfolioFacts,
    /// Contacts whose CRM time zone is not one GoMark knows (the fallback is counted).
    pub unknown_zones: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Enroll { mailbox_id: String },
    Skip(Skip),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub scored: Scored,
    pub outcome: Outcome,
}

/// The zone a contact's local time is read in: their own when it is one GoMark knows,
/// else the rule's default (and `false`: the caller counts and logs the fallback).
pub fn contact_zone(contact: Option<&str>, default_zone: &str) -> (TimeZone, String, bool) {
    if let Some(name) = contact.filter(|z| !z.trim().is_empty()) {
        if let Some(zone) = zones::zone(name) {
            return (zone, name.to_owned(), true);
        }
        let fallback = zones::zone(default_zone).unwrap_or(TimeZone::UTC);
        return (fallback, format!("{default_zone} (the contact's {name:?} is unknown)"), false);
    }
    (zones::zone(default_zone).unwrap_or(TimeZone::UTC), default_zone.to_owned(), true)
}

/// True when the contact's CRM names a time zone GoMark cannot read.
pub fn unknown_zone(contact: Option<&str>) -> bool {
    contact.is_some_and(|z| !z.trim().is_empty() && !zones::is_known(z))
}

/// The contact's zone as Upso is to read their send window, and a note when it falls back:
/// their own when GoMark knows it; otherwise none, so Upso reads the window in the
/// cadence's own zone (given a name it does not know, Upso would read UTC, silently).
pub fn upso_zone(contact: Option<&str>) -> (Option<String>, Option<String>) {
    match contact.filter(|z| !z.trim().is_empty()) {
        Some(z) if unknown_zone(Some(z)) => (
            None,
            Some(format!("the contact's time zone {z:?} is unknown; the send window is read in the cadence's zone")),
        ),
        other => (other.map(str::to_owned), None),
    }
}

fn in_quiet_hours(rule: &UpsellRule, customer: &Customer, now_ms: i64) -> Option<String> {
    let q = rule.guardrails.quiet_hours.as_ref()?;
    let (start, end) = (parse_hhmm(&q.start)?, parse_hhmm(&q.end)?);
    let (zone, zone_name, _) = contact_zone(customer.time_zone.as_deref(), &q.default_time_zone);
    let local = zones::local_minutes(now_ms, &zone);
    zones::in_span(local, start, end).then(|| {
        format!("{:02}:{:02} in {zone_name} is within quiet hours {}–{}", local / 60, local % 60, q.start, q.end)
    })
}

fn when(at_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(at_ms)
        .map_or_else(|_| at_ms.to_string(), |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
}

/// The portfolio's rules for one person about to be enrolled by `company_id`.
pub fn portfolio_skip(
    rules: &PortfolioContact,
    company_id: &str,
    suppression: Option<&Suppression>,
    touches: &[Touch],
    running_elsewhere: Option<&(String, String)>,
    now_ms: i64,
) -> Option<Skip> {
    if let Some(s) = suppression {
        let by = if s.source_company_id.is_empty() { "the portfolio".to_owned() } else { s.source_company_id.clone() };
        return Some(Skip {
            reason: SkipReason::PortfolioSuppressed,
            detail: format!("on the portfolio suppression list ({}, via {by})", s.kind.as_str()),
            caused_by: s.source_company_id.clone(),
        });
    }
    let gap_ms = i64::from(rules.min_hours_between_touches) * HOUR_MS;
    if gap_ms > 0
        && let Some(last) = touches.iter().filter(|t| now_ms - t.at < gap_ms).max_by_key(|t| t.at)
    {
        return Some(Skip {
            reason: SkipReason::PortfolioGap,
            detail: format!(
                "enrolled by {} at {}; the portfolio's minimum gap is {} hours",
                last.company_id,
                when(last.at),
                rules.min_hours_between_touches
            ),
            caused_by: last.company_id.clone(),
        });
    }
    if let Some(max) = rules.max_touches {
        let window_ms = i64::from(rules.window_days) * DAY_MS;
        let mut recent: Vec<&Touch> = touches.iter().filter(|t| now_ms - t.at < window_ms).collect();
        if recent.len() >= max as usize {
            recent.sort_by_key(|t| t.at);
            let by: Vec<String> = recent.iter().map(|t| format!("{} at {}", t.company_id, when(t.at))).collect();
            return Some(Skip {
                reason: SkipReason::PortfolioCap,
                detail: format!(
                    "enrolled {} times in the last {} days ({}); the portfolio cap is {max}",
                    recent.len(),
                    rules.window_days,
                    by.join(", ")
                ),
                caused_by: recent.last().map(|t| t.company_id.clone()).unwrap_or_default(),
            });
        }
    }
    if rules.exclusive_cadences
        && let Some((other, cadence)) = running_elsewhere.filter(|(c, _)| c != company_id)
    {
        return Some(Skip {
            reason: SkipReason::PortfolioExclusive,
            detail: format!("running in cadence {cadence} of {other}; cadences are exclusive across the portfolio"),
            caused_by: other.clone(),
        });
    }
    None
}

/// The company's caps for one more enrollment from `mailbox` (its count today given).
pub fn cap_skip(g: &Guardrails, company_today: u32, rolling: &[u32], mailbox_today: u32) -> Option<Skip> {
    if company_today >= g.company_daily_cap {
        return Some(skip(SkipReason::CompanyCap, format!("{} enrollments per day", g.company_daily_cap)));
    }
    for (cap, used) in g.rolling_caps.iter().zip(rolling) {
        if *used >= cap.max {
            return Some(skip(SkipReason::RollingCap, format!("{} enrollments in any {} hours", cap.max, cap.hours)));
        }
    }
    if mailbox_today >= g.mailbox_daily_cap {
        return Some(skip(SkipReason::MailboxCap, format!("the mailbox has {} today", g.mailbox_daily_cap)));
    }
    None
}

/// What the exact check at reservation time counted, inside its transaction.
#[derive(Debug, Clone, Default)]
pub struct CapCounts {
    pub company_today: u32,
    pub mailbox_today: u32,
    pub rolling: Vec<u32>,
    pub suppression: Option<Suppression>,
    pub person_touches: Vec<Touch>,
    pub running_elsewhere: Option<(String, String)>,
}

/// The exact re-check of one reservation: what [`decide`] concluded from its snapshot,
/// against the counts taken under the cap locks.
pub fn recheck(
    rule: &UpsellRule,
    portfolio: &PortfolioContact,
    company_id: &str,
    c: &CapCounts,
    now_ms: i64,
) -> Option<Skip> {
    portfolio_skip(
        portfolio,
        company_id,
        c.suppression.as_ref(),
        &c.person_touches,
        c.running_elsewhere.as_ref(),
        now_ms,
    )
    .or_else(|| cap_skip(&rule.guardrails, c.company_today, &c.rolling, c.mailbox_today))
}

/// Decides for each ranked customer, in rank order, updating `facts` as enrollments are
/// granted (caps fill up, the contact becomes running).
pub fn decide(
    rule: &UpsellRule,
    customers: &[Customer],
    ranked: Vec<Scored>,
    facts: &mut GuardFacts,
    now_ms: i64,
) -> Vec<Decision> {
    let g = &rule.guardrails;
    let gap_ms = i64::from(g.min_days_since_last_touch) * DAY_MS;
    let window = rule.closed_won_days_ago;
    let holiday = facts.calendar.holiday(now_ms);
    // Enrollments granted in this run (only the iterations that enroll count; a struct, so
    // the counter is not mistaken for a loop index).
    struct Run {
        granted: u32,
    }
    let mut run = Run { granted: 0 };
    let mut out = Vec::with_capacity(ranked.len());
    for s in ranked {
        let c = &customers[s.customer];
        let outcome = 'decide: {
            let Some(closed) = c.won_close_ms else {
                break 'decide Outcome::Skip(skip(SkipReason::OutsideTriggerWindow, "no won deal".into()));
            };
            let days_ago = (now_ms - closed).div_euclid(DAY_MS);
            if days_ago < i64::from(window.min) || days_ago > i64::from(window.max) {
                break 'decide Outcome::Skip(skip(
                    SkipReason::OutsideTriggerWindow,
                    format!("won {days_ago} days ago; the rule wants {}–{}", window.min, window.max),
                ));
            }
            if s.score < rule.min_score {
                break 'decide Outcome::Skip(skip(
                    SkipReason::BelowMinScore,
                    format!("score {} < {}", s.score, rule.min_score),
                ));
            }
            if facts.running.contains(&c.email) {
                break 'decide Outcome::Skip(skip(
                    SkipReason::AlreadyEnrolled,
                    "already running in this cadence".into(),
                ));
            }
            if facts.opted_out.contains(&c.email) {
                break 'decide Outcome::Skip(skip(SkipReason::OptedOut, "opted out in Upso".into()));
            }
            if is_suppressed(&facts.suppression_list, &c.email) {
                break 'decide Outcome::Skip(skip(SkipReason::Suppressed, "on the configured suppression list".into()));
            }
            let who = person(&c.email);
            let p = &facts.portfolio;
            if let Some(s) = p.suppressed.get(&who) {
                break 'decide Outcome::Skip(
                    portfolio_skip(&p.rules, &facts.company_id, Some(s), &[], None, now_ms)
                        .unwrap_or_else(|| skip(SkipReason::PortfolioSuppressed, String::new())),
                );
            }
            if let Some(&at) = facts.last_touch.get(&c.email)
                && now_ms - at < gap_ms
            {
                let days = (now_ms - at).div_euclid(DAY_MS);
                break 'decide Outcome::Skip(skip(
                    SkipReason::RecentlyTouched,
                    format!("last touched {days} days ago; the minimum gap is {} days", g.min_days_since_last_touch),
                ));
            }
            let touches = p.touches.get(&who).map(Vec::as_slice).unwrap_or_default();
            if let Some(s) =
                portfolio_skip(&p.rules, &facts.company_id, None, touches, p.running_elsewhere.get(&who), now_ms)
            {
                break 'decide Outcome::Skip(s);
            }
            if g.skip_open_deals && c.open_deals > 0 {
                break 'decide Outcome::Skip(skip(SkipReason::OpenDeal, format!("{} open deal(s)", c.open_deals)));
            }
            if c.escalated {
                break 'decide Outcome::Skip(skip(SkipReason::Escalation, format!("{} is set", g.escalation_property)));
            }
            // From here the contact's local time matters (quiet hours, then the cadence's
            // send window in Upso): a zone GoMark cannot read falls back, and is counted.
            if unknown_zone(c.time_zone.as_deref()) {
                facts.unknown_zones += 1;
            }
            if let Some(detail) = &holiday {
                break 'decide Outcome::Skip(skip(SkipReason::Holiday, detail.clone()));
            }
            if let Some(detail) = in_quiet_hours(rule, c, now_ms) {
                break 'decide Outcome::Skip(skip(SkipReason::QuietHours, detail));
            }
            if run.granted >= rule.max_per_run {
                break 'decide Outcome::Skip(skip(
                    SkipReason::RunLimit,
                    format!("{} enrollments per run", rule.max_per_run),
                ));
            }
            // The cadence's sender when it names one of the company's mailboxes, else the
            // least used mailbox with room: spreads the day's enrollments evenly.
            let sender = facts.sender.as_deref();
            let chosen = match facts.mailboxes.iter().position(|(m, _)| Some(m.as_str()) == sender) {
                Some(i) => Some(i),
                None => facts
                    .mailboxes
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, used))| *used < g.mailbox_daily_cap)
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(i, _)| i),
            };
            let mailbox_today = chosen.map_or(g.mailbox_daily_cap, |i| facts.mailboxes[i].1);
            if let Some(s) = cap_skip(g, facts.company_today, &facts.rolling, mailbox_today) {
                break 'decide Outcome::Skip(s);
            }
            let Some(i) = chosen else {
                break 'decide Outcome::Skip(skip(SkipReason::MailboxCap, "no mailbox".into()));
            };
            let mailbox = &mut facts.mailboxes[i];
            mailbox.1 += 1;
            facts.company_today += 1;
            for used in &mut facts.rolling {
                *used += 1;
            }
            facts.running.insert(c.email.clone());
            facts
                .portfolio
                .touches
                .entry(who)
                .or_default()
                .push(Touch { company_id: facts.company_id.clone(), at: now_ms });
            run.granted += 1;
            Outcome::Enroll { mailbox_id: mailbox.0.clone() }
        };
        out.push(Decision { scored: s, outcome });
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
        decide(rule, &c, ranked, facts, NOW)
            .into_iter()
            .map(|d| {
                let reason = match d.outcome {
                    Outcome::Enroll { .. } => None,
                    Outcome::Skip(s) => Some(s.reason),
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

    fn ms(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().expect("instant").as_millisecond()
    }

    #[test]
    fn quiet_hours_follow_daylight_saving_in_named_zones_and_unknown_zones_are_counted() {
        let r = rule(
            serde_json::json!({"quietHours": {"start": "20:00", "end": "08:00", "defaultTimeZone": "Europe/Berlin"}}),
        );
        let deals = [
            deal("ny@x.example", 30.0, &[("gomark_contact_time_zone", "America/New_York")]),
            deal("berlin@x.example", 20.0, &[]),
            deal("gotham@x.example", 10.0, &[("gomark_contact_time_zone", "America/Gotham")]),
        ];
        let run = |at: i64| {
            let deals: Vec<CustomerDeal> =
                deals.iter().cloned().map(|d| CustomerDeal { close_date_ms: at - 10 * DAY, ..d }).collect();
            let c = customers(&deals, &r);
            let mut f = facts(&[("m1", 0)]);
            let ranked = rank(&r, &c, at);
            let got: Vec<Option<SkipReason>> = decide(&r, &c, ranked, &mut f, at)
                .into_iter()
                .map(|d| match d.outcome {
                    Outcome::Enroll { .. } => None,
                    Outcome::Skip(s) => Some(s.reason),
                })
                .collect();
            (got, f.unknown_zones)
        };
        // 12:30 UTC on 2026-03-06: 07:30 in New York (EST, quiet), 13:30 in Berlin.
        let quiet = Some(SkipReason::QuietHours);
        assert_eq!(run(ms("2026-03-06T12:30:00Z")), (vec![quiet, None, None], 1));
        // The same 12:30 UTC after the US change: 08:30 in New York (EDT), no longer quiet.
        assert_eq!(run(ms("2026-03-09T12:30:00Z")).0, vec![None, None, None]);
        // 18:30 UTC: 19:30 in Berlin before Europe's change, 20:30 after it (quiet); the
        // unknown zone falls back to Berlin's, and is counted.
        assert_eq!(run(ms("2026-03-27T18:30:00Z")).0[1..], [None, None]);
        assert_eq!(run(ms("2026-03-30T18:30:00Z")), (vec![None, quiet, quiet], 1));
    }

    #[test]
    fn an_unknown_contact_zone_is_counted_and_not_passed_on_without_quiet_hours_too() {
        let r = rule(serde_json::json!({}));
        let deals = [
            deal("gotham@x.example", 30.0, &[("gomark_contact_time_zone", "America/Gotham")]),
            deal("ny@x.example", 20.0, &[("gomark_contact_time_zone", "America/New_York")]),
            deal("none@x.example", 10.0, &[]),
        ];
        let mut f = facts(&[("m1", 0)]);
        let got = outcomes(&r, &deals, &mut f);
        assert!(got.iter().all(|(_, r)| r.is_none()), "{got:?}");
        assert_eq!(f.unknown_zones, 1);
        let (zone, note) = upso_zone(Some("America/Gotham"));
        assert_eq!(zone, None, "Upso would read it as UTC: the cadence's zone applies instead");
        assert!(note.is_some_and(|n| n.contains("\"America/Gotham\" is unknown")));
        assert_eq!(upso_zone(Some("America/New_York")), (Some("America/New_York".into()), None));
        assert_eq!(upso_zone(None), (None, None));
    }

    #[test]
    fn holidays_and_rolling_caps_hold() {
        let r = rule(serde_json::json!({"rollingCaps": [{"hours": 1, "max": 2}]}));
        let deals = [deal("a@x.example", 3.0, &[]), deal("b@x.example", 2.0, &[]), deal("c@x.example", 1.0, &[])];
        let mut f = facts(&[("m1", 0)]);
        f.rolling = vec![1];
        let got = outcomes(&r, &deals, &mut f);
        assert_eq!(
            got.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
            [None, Some(SkipReason::RollingCap), Some(SkipReason::RollingCap)]
        );

        let mut f = facts(&[("m1", 0)]);
        f.calendar = Calendar::from_config(&gtm_config::CompanyCalendar {
            time_zone: Some("Pacific/Auckland".into()),
            holidays: vec!["2026-11-24".into()],
        })
        .expect("calendar");
        // 12:00 UTC on Monday 23 November is already Tuesday the 24th in Auckland.
        let got = outcomes(&r, &deals[..1], &mut f);
        assert_eq!(got[0].1, Some(SkipReason::Holiday));
    }
}

//! Upso cadences and upsell rules as desired state: the typed schema of `cadences`,
//! `upsellRules` and `suppressionList`, and its validation. upso-cadence applies cadences
//! to Upso and runs the upsell engine from the rules.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One outreach cadence, identified by `key` (stable, so its Upso name may change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cadence {
    /// `^[a-z][a-z0-9_-]{0,63}$`; overlays override a baseline cadence with the same key.
    pub key: String,
    /// The name shown in Upso; unique among a company's cadences.
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Emails go out only inside this window (absent: any time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_window: Option<SendWindow>,
    #[serde(default = "yes")]
    pub exit_on_reply: bool,
    #[serde(default = "yes")]
    pub exit_on_bounce: bool,
    pub steps: Vec<CadenceStep>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepType {
    AutoEmail,
    ManualEmail,
    Call,
    Task,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CadenceStep {
    #[serde(rename = "type")]
    pub step_type: StepType,
    /// Hours after the previous step (after enrollment, for the first).
    #[serde(default)]
    pub delay_hours: u32,
    /// Email steps: the subject and body templates (`{{firstName}}`, `{{company}}`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Call and task steps: what the rep should do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendWindow {
    /// `UTC` or a fixed offset such as `+02:00` (see docs/upso: no daylight saving).
    pub time_zone: String,
    /// `HH:MM`, inclusive.
    pub start: String,
    /// `HH:MM`, exclusive; after `start`.
    pub end: String,
    #[serde(default = "weekdays")]
    pub weekdays: Vec<String>,
}

fn weekdays() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri"].iter().map(|d| (*d).to_owned()).collect()
}

/// Who gets upsell outreach, scored how, enrolled where, within which guardrails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpsellRule {
    /// Overlays override a baseline rule with the same key.
    pub key: String,
    /// The key of the cadence customers are enrolled into.
    pub cadence: String,
    /// Customers scoring below this are never enrolled.
    #[serde(default)]
    pub min_score: f64,
    /// At most this many enrollments per engine run.
    #[serde(default = "default_max_per_run")]
    pub max_per_run: u32,
    /// Only customers whose latest won deal closed between `min` and `max` days ago.
    #[serde(default)]
    pub closed_won_days_ago: DayRange,
    /// The deal stage ids that count as won (HubSpot's default: `closedwon`).
    #[serde(default = "default_won_stages")]
    pub won_stages: Vec<String>,
    /// The stage ids that count as lost; any other stage is an open deal.
    #[serde(default = "default_lost_stages")]
    pub lost_stages: Vec<String>,
    pub scoring: Vec<Criterion>,
    #[serde(default)]
    pub guardrails: Guardrails,
}

fn default_max_per_run() -> u32 {
    100
}

fn default_won_stages() -> Vec<String> {
    vec!["closedwon".into()]
}

fn default_lost_stages() -> Vec<String> {
    vec!["closedlost".into()]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DayRange {
    #[serde(default)]
    pub min: u32,
    #[serde(default = "default_max_days")]
    pub max: u32,
}

fn default_max_days() -> u32 {
    365
}

impl Default for DayRange {
    fn default() -> Self {
        Self { min: 0, max: default_max_days() }
    }
}

/// One scoring criterion over a deal property (`amount`, `closedate`, `dealstage`,
/// `hubspot_owner_id`, `gomark_product_usage`, `gomark_renewal_date`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Criterion {
    pub property: String,
    pub op: CriterionOp,
    /// The operand: a number for comparisons and day counts, text for `eq`/`neq`, a list
    /// for `in`. Absent for `exists` and `linear`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// Points when the criterion holds (`linear`: points per unit of the property).
    pub points: f64,
    /// `linear` only: the most points it can give.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_points: Option<f64>,
    /// Words for the explanation ("large contract").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CriterionOp {
    Eq,
    Neq,
    In,
    Gt,
    Gte,
    Lt,
    Lte,
    Exists,
    /// A date property within the last `value` days.
    WithinDaysPast,
    /// A date property within the next `value` days (renewals).
    WithinDaysAhead,
    /// `points × value of the property`, capped at `maxPoints`.
    Linear,
}

/// Limits that hold whatever the score says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Guardrails {
    /// Days since the contact's last email from any cadence of the company.
    #[serde(default = "default_min_gap")]
    pub min_days_since_last_touch: u32,
    /// Upsell enrollments per mailbox per UTC day.
    #[serde(default = "default_mailbox_cap")]
    pub mailbox_daily_cap: u32,
    /// Upsell enrollments per company per UTC day, across mailboxes.
    #[serde(default = "default_company_cap")]
    pub company_daily_cap: u32,
    /// No enrollment while it is this time where the contact lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// No upsell while the customer has an open deal.
    #[serde(default = "yes")]
    pub skip_open_deals: bool,
    /// A deal property that, set to `true`, marks an open escalation (no upsell then).
    #[serde(default = "default_escalation_property")]
    pub escalation_property: String,
}

fn default_min_gap() -> u32 {
    14
}
fn default_mailbox_cap() -> u32 {
    50
}
fn default_company_cap() -> u32 {
    200
}
fn default_escalation_property() -> String {
    "gomark_escalation".into()
}

impl Default for Guardrails {
    fn default() -> Self {
        Self {
            min_days_since_last_touch: default_min_gap(),
            mailbox_daily_cap: default_mailbox_cap(),
            company_daily_cap: default_company_cap(),
            quiet_hours: None,
            skip_open_deals: true,
            escalation_property: default_escalation_property(),
        }
    }
}

/// `start` to `end` in the contact's time zone (it may wrap midnight: 20:00–08:00).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuietHours {
    pub start: String,
    pub end: String,
    /// Used when the contact's time zone is unknown.
    #[serde(default = "utc")]
    pub default_time_zone: String,
}

fn utc() -> String {
    "UTC".into()
}

/// `HH:MM` as minutes after midnight.
pub fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.len() == 5).then_some(h * 60 + m)
}

/// A time zone GoMark can compute with: `UTC` or `±HH:MM`, as minutes east of UTC.
pub fn utc_offset_minutes(zone: &str) -> Option<i32> {
    let zone = zone.trim();
    if zone.eq_ignore_ascii_case("utc") || zone == "Z" || zone == "Etc/UTC" {
        return Some(0);
    }
    let sign = match zone.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return None,
    };
    let minutes = parse_hhmm(&zone[1..])?;
    (minutes <= 14 * 60).then_some(sign * minutes as i32)
}

pub(crate) fn is_cadence_key(s: &str) -> bool {
    crate::validate::is_pipeline_id(s)
}

/// Problems in one company's effective outreach configuration, as `(path, message)`.
pub(crate) fn check_cadences(cadences: &[(String, &Cadence)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut keys = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (path, c) in cadences {
        if !is_cadence_key(&c.key) {
            out.push((format!("{path}.key"), "must match ^[a-z][a-z0-9_-]{0,63}$".into()));
        }
        if !keys.insert(c.key.as_str()) {
            out.push((format!("{path}.key"), format!("duplicate cadence key {:?}", c.key)));
        }
        if c.name.trim().is_empty() || c.name.len() > 200 {
            out.push((format!("{path}.name"), "must be 1 to 200 characters".into()));
        } else if !names.insert(c.name.as_str()) {
            out.push((format!("{path}.name"), format!("duplicate cadence name {:?}", c.name)));
        }
        if c.steps.is_empty() || c.steps.len() > 50 {
            out.push((format!("{path}.steps"), "a cadence has 1 to 50 steps".into()));
        }
        for (i, s) in c.steps.iter().enumerate() {
            let p = format!("{path}.steps[{i}]");
            let email = matches!(s.step_type, StepType::AutoEmail | StepType::ManualEmail);
            if email && (s.subject.as_deref().is_none_or(str::is_empty) || s.body.as_deref().is_none_or(str::is_empty))
            {
                out.push((p.clone(), "email steps need a subject and a body".into()));
            }
            if !email && (s.subject.is_some() || s.body.is_some()) {
                out.push((p.clone(), "only email steps have a subject and body".into()));
            }
            if s.delay_hours > 24 * 365 {
                out.push((format!("{p}.delayHours"), "must be at most 8760 (a year)".into()));
            }
        }
        if let Some(w) = &c.send_window {
            let p = format!("{path}.sendWindow");
            if utc_offset_minutes(&w.time_zone).is_none() {
                out.push((format!("{p}.timeZone"), "must be UTC or an offset like +02:00".into()));
            }
            match (parse_hhmm(&w.start), parse_hhmm(&w.end)) {
                (Some(s), Some(e)) if s < e => {}
                _ => out.push((p.clone(), "start and end are HH:MM with start before end".into())),
            }
            const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
            if w.weekdays.is_empty() || w.weekdays.iter().any(|d| !DAYS.contains(&d.as_str())) {
                out.push((format!("{p}.weekdays"), "one or more of mon, tue, wed, thu, fri, sat, sun".into()));
            }
        }
    }
    out
}

pub(crate) fn check_rules(rules: &[(String, &UpsellRule)], cadences: &[(String, &Cadence)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut keys = BTreeSet::new();
    for (path, r) in rules {
        if !is_cadence_key(&r.key) {
            out.push((format!("{path}.key"), "must match ^[a-z][a-z0-9_-]{0,63}$".into()));
        }
        if !keys.insert(r.key.as_str()) {
            out.push((format!("{path}.key"), format!("duplicate upsell rule key {:?}", r.key)));
        }
        if !cadences.iter().any(|(_, c)| c.key == r.cadence) {
            out.push((format!("{path}.cadence"), format!("no cadence with key {:?}", r.cadence)));
        }
        if !r.min_score.is_finite() {
            out.push((format!("{path}.minScore"), "must be a number".into()));
        }
        if r.closed_won_days_ago.min > r.closed_won_days_ago.max {
            out.push((format!("{path}.closedWonDaysAgo"), "min must not exceed max".into()));
        }
        if r.scoring.is_empty() {
            out.push((format!("{path}.scoring"), "needs at least one criterion".into()));
        }
        for (i, c) in r.scoring.iter().enumerate() {
            let p = format!("{path}.scoring[{i}]");
            if c.property.is_empty() {
                out.push((format!("{p}.property"), "is required".into()));
            }
            if !c.points.is_finite() || c.max_points.is_some_and(|m| !m.is_finite()) {
                out.push((format!("{p}.points"), "must be a number".into()));
            }
            let value = c.value.as_ref();
            let ok = match c.op {
                CriterionOp::Exists | CriterionOp::Linear => value.is_none(),
                CriterionOp::Eq | CriterionOp::Neq => {
                    value.is_some_and(|v| v.is_string() || v.is_number() || v.is_boolean())
                }
                CriterionOp::In => value.is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty())),
                _ => value.is_some_and(serde_json::Value::is_number),
            };
            if !ok {
                out.push((format!("{p}.value"), format!("does not fit op {:?}", c.op)));
            }
        }
        let g = &r.guardrails;
        if g.mailbox_daily_cap == 0 || g.company_daily_cap == 0 {
            out.push((format!("{path}.guardrails"), "daily caps must be at least 1".into()));
        }
        if let Some(q) = &g.quiet_hours
            && (parse_hhmm(&q.start).is_none()
                || parse_hhmm(&q.end).is_none()
                || q.start == q.end
                || utc_offset_minutes(&q.default_time_zone).is_none())
        {
            out.push((
                format!("{path}.guardrails.quietHours"),
                "start and end are distinct HH:MM; defaultTimeZone UTC or ±HH:MM".into(),
            ));
        }
    }
    out
}

/// Suppression entries: an address (`a@b.com`) or a whole domain (`@b.com`).
pub(crate) fn check_suppression(list: &[String]) -> Vec<(String, String)> {
    list.iter()
        .enumerate()
        .filter(|(_, e)| !e.contains('@') || e.trim() != e.as_str() || e.ends_with('@'))
        .map(|(i, _)| (format!("baseline.suppressionList[{i}]"), "an email address or @domain".into()))
        .collect()
}

/// True when `email` is on `list` (exact address or `@domain`), case-insensitively.
pub fn is_suppressed(list: &[String], email: &str) -> bool {
    let email = email.trim().to_ascii_lowercase();
    list.iter().any(|entry| {
        let entry = entry.to_ascii_lowercase();
        if entry.starts_with('@') { email.ends_with(&entry) } else { entry == email }
    })
}

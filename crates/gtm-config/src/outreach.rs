//! Upso cadences and upsell rules as desired state: the typed schema of `cadences`,
//! `upsellRules` and `suppressionList`, and its validation. upso-cadence applies cadences
//! to Upso and runs the upsell engine from the rules.

use crate::zones;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

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
    /// The mailbox (address or Upso id) enrollments go out from, when the company has it;
    /// otherwise the least used mailbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Template variables every enrollment carries (`{{signature}}`), besides the
    /// customer's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// Governance, baseline only: a cadence listing fields here is published centrally,
    /// and a company overlay may change only these fields of it (the others are locked).
    /// Absent: not governed, an overlay may replace the whole cadence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localizable: Option<Vec<String>>,
}

/// The cadence fields a baseline may mark localizable.
pub const CADENCE_FIELDS: [&str; 8] =
    ["name", "tags", "sendWindow", "exitOnReply", "exitOnBounce", "steps", "sender", "variables"];

impl Cadence {
    /// The names of the fields (of [`CADENCE_FIELDS`]) in which `self` and `other` differ.
    pub fn differing_fields(&self, other: &Cadence) -> Vec<&'static str> {
        let differs = [
            self.name != other.name,
            self.tags != other.tags,
            self.send_window != other.send_window,
            self.exit_on_reply != other.exit_on_reply,
            self.exit_on_bounce != other.exit_on_bounce,
            self.steps != other.steps,
            self.sender != other.sender,
            self.variables != other.variables,
        ];
        CADENCE_FIELDS.iter().zip(differs).filter(|(_, d)| *d).map(|(f, _)| *f).collect()
    }
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
    /// An IANA zone (`Europe/Berlin`, daylight saving included), `UTC` or a fixed offset
    /// (`+02:00`). The contact's own zone wins when Upso knows it.
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
    /// Upsell enrollments per mailbox per calendar day (in the company's time zone).
    #[serde(default = "default_mailbox_cap")]
    pub mailbox_daily_cap: u32,
    /// Upsell enrollments per company per calendar day (in the company's time zone),
    /// across mailboxes.
    #[serde(default = "default_company_cap")]
    pub company_daily_cap: u32,
    /// Caps over rolling windows, company-wide: at most `max` enrollments in any
    /// `hours` (1: hourly, 24: the last 24 hours, whatever the calendar says).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rolling_caps: Vec<RollingCap>,
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
            rolling_caps: Vec::new(),
            quiet_hours: None,
            skip_open_deals: true,
            escalation_property: default_escalation_property(),
        }
    }
}

/// At most `max` enrollments in any `hours` hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollingCap {
    pub hours: u32,
    pub max: u32,
}

/// A company's outreach calendar (overlay `outreach`): its time zone, which the calendar
/// day of its caps and its holidays are read in, and the holidays nobody is enrolled on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompanyCalendar {
    /// An IANA zone (absent: UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// `YYYY-MM-DD` local dates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<String>,
}

/// Rules for a person across every portfolio company (baseline `portfolioContact`): a
/// person is their normalised email, whichever company's customer they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortfolioContact {
    /// At most this many enrollments of one person by all companies together within
    /// `windowDays` (absent: no portfolio cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_touches: Option<u32>,
    #[serde(default = "default_window_days")]
    pub window_days: u32,
    /// Hours between two enrollments of one person, from any companies (0: none).
    #[serde(default)]
    pub min_hours_between_touches: u32,
    /// A person running in a cadence of one company is not enrolled by another.
    #[serde(default)]
    pub exclusive_cadences: bool,
}

fn default_window_days() -> u32 {
    7
}

impl Default for PortfolioContact {
    fn default() -> Self {
        Self {
            max_touches: None,
            window_days: default_window_days(),
            min_hours_between_touches: 0,
            exclusive_cadences: false,
        }
    }
}

/// `start` to `end` in the contact's time zone (it may wrap midnight: 20:00–08:00).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuietHours {
    pub start: String,
    pub end: String,
    /// Used when the contact's time zone is unknown (an IANA zone, `UTC` or `±HH:MM`).
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
        for (i, field) in c.localizable.iter().flatten().enumerate() {
            if !CADENCE_FIELDS.contains(&field.as_str()) {
                out.push((format!("{path}.localizable[{i}]"), format!("one of {}", CADENCE_FIELDS.join(", "))));
            }
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
            if !zones::is_known(&w.time_zone) {
                out.push((
                    format!("{p}.timeZone"),
                    format!(
                        "{:?} is not a time zone (an IANA name such as Europe/Berlin, UTC, or +02:00)",
                        w.time_zone
                    ),
                ));
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
        if let Some(q) = &g.quiet_hours {
            if parse_hhmm(&q.start).is_none() || parse_hhmm(&q.end).is_none() || q.start == q.end {
                out.push((format!("{path}.guardrails.quietHours"), "start and end are distinct HH:MM".into()));
            }
            if !zones::is_known(&q.default_time_zone) {
                out.push((
                    format!("{path}.guardrails.quietHours.defaultTimeZone"),
                    format!("{:?} is not a time zone (an IANA name, UTC, or ±HH:MM)", q.default_time_zone),
                ));
            }
        }
        for (i, cap) in g.rolling_caps.iter().enumerate() {
            if cap.hours == 0 || cap.hours > 24 * 31 || cap.max == 0 {
                out.push((
                    format!("{path}.guardrails.rollingCaps[{i}]"),
                    "hours is 1 to 744 and max at least 1".into(),
                ));
            }
        }
    }
    out
}

/// Problems in a company's calendar (overlay path `path`).
pub(crate) fn check_calendar(cal: &CompanyCalendar, path: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(tz) = &cal.time_zone
        && !zones::is_known(tz)
    {
        out.push((
            format!("{path}.timeZone"),
            format!("{tz:?} is not a time zone (an IANA name such as Europe/Berlin)"),
        ));
    }
    for (i, d) in cal.holidays.iter().enumerate() {
        if zones::parse_date(d).is_none() {
            out.push((format!("{path}.holidays[{i}]"), "a date YYYY-MM-DD".into()));
        }
    }
    out
}

/// Problems in the portfolio contact rules.
pub(crate) fn check_portfolio_contact(p: &PortfolioContact) -> Vec<(String, String)> {
    let path = "baseline.portfolioContact";
    let mut out = Vec::new();
    if p.max_touches == Some(0) {
        out.push((format!("{path}.maxTouches"), "must be at least 1 (use the suppression list to stop all)".into()));
    }
    if p.window_days == 0 || p.window_days > 366 {
        out.push((format!("{path}.windowDays"), "must be 1 to 366".into()));
    }
    if p.min_hours_between_touches > 24 * 366 {
        out.push((format!("{path}.minHoursBetweenTouches"), "must be at most a year".into()));
    }
    out
}

/// Governance: an overlay cadence (`path`) overriding a governed baseline cadence may
/// change only the fields the baseline lists as localizable.
pub(crate) fn check_governed(base: &Cadence, base_path: &str, overlay: &Cadence, path: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(allowed) = &base.localizable else { return out };
    if overlay.localizable.is_some() {
        out.push((format!("{path}.localizable"), format!("only the baseline governs a cadence ({base_path})")));
    }
    for field in base.differing_fields(overlay) {
        if !allowed.iter().any(|a| a == field) {
            out.push((
                format!("{path}.{field}"),
                format!(
                    "is locked by the baseline cadence {:?} ({base_path}); a company may change only: {}",
                    base.key,
                    if allowed.is_empty() { "nothing".to_owned() } else { allowed.join(", ") }
                ),
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

/// The person an email denotes, the same whichever company knows them: trimmed, lower
/// case, and without a `+tag` in the local part (`Ann+acme@X.example` is
/// `ann@x.example`). The policy is deliberate: plus-addressing is how one person tells
/// companies apart, not a second person, so a suppression or a cap follows them.
pub fn person(email: &str) -> String {
    let email = email.trim().to_lowercase();
    match email.split_once('@') {
        Some((local, domain)) => {
            let local = local.split_once('+').map_or(local, |(l, _)| l);
            format!("{local}@{domain}")
        }
        None => email,
    }
}

/// True when `email` is on `list` (an address or `@domain`), both read as the person
/// they denote ([`person`]): case, surrounding spaces and a `+tag` do not evade it.
pub fn is_suppressed(list: &[String], email: &str) -> bool {
    let who = person(email);
    list.iter().any(|entry| {
        let entry = entry.trim().to_lowercase();
        if entry.starts_with('@') { who.ends_with(&entry) } else { person(&entry) == who }
    })
}

//! One Upso account: its mailboxes, cadences, enrollments, opt-outs and activity log, and
//! the scheduler that runs due steps within send windows and caps.

use crate::error::{ApiError, ApiResult};
use crate::window;
use axum::http::StatusCode;
use chrono::{TimeZone, Utc};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;
use upso_client::template;
use upso_client::*;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

pub fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn parse_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}

/// What a step activity adds: the step index, the sending mailbox, the rendered subject and body.
type StepDetail = (u32, Option<String>, Option<(String, String)>);

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredEnrollment {
    pub enrollment: Enrollment,
    /// When the current step is due (before the send window and caps are applied).
    pub due_ms: Option<i64>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredWebhook {
    pub webhook: Webhook,
    pub secret: String,
}

#[derive(Debug)]
pub(crate) struct AccountState {
    pub account: Account,
    pub mailboxes: Vec<Mailbox>,
    pub cadences: Vec<Cadence>,
    pub enrollments: Vec<StoredEnrollment>,
    pub opt_outs: BTreeMap<String, OptOut>,
    pub activities: Vec<Activity>,
    pub webhooks: Vec<StoredWebhook>,
    /// Emails sent per (mailbox id, UTC day number).
    sent: HashMap<(String, i64), u32>,
    sent_account: HashMap<i64, u32>,
    next_id: u64,
    /// Request instants in the rolling rate-limit window.
    pub window: VecDeque<Instant>,
    pub rate_limited: u32,
    pub requests: u64,
    /// Injected failures: the next `n` requests answer `status`.
    pub fail_next: Option<(u32, u16)>,
    /// Activities not yet handed to webhook delivery.
    pub undelivered: Vec<Activity>,
}

/// One account as the simulator's state file keeps it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedAccount {
    token: String,
    account: Account,
    mailboxes: Vec<Mailbox>,
    cadences: Vec<Cadence>,
    enrollments: Vec<StoredEnrollment>,
    opt_outs: BTreeMap<String, OptOut>,
    activities: Vec<Activity>,
    webhooks: Vec<StoredWebhook>,
    sent: Vec<(String, i64, u32)>,
    sent_account: Vec<(i64, u32)>,
    next_id: u64,
}

impl SavedAccount {
    pub fn account_id(&self) -> &str {
        &self.account.id
    }
}

fn norm(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

impl AccountState {
    pub fn new(id: String, name: String, mailbox_cap: u32, daily_send_cap: Option<u32>) -> Self {
        let mut state = Self {
            account: Account { id, name, daily_send_cap },
            mailboxes: Vec::new(),
            cadences: Vec::new(),
            enrollments: Vec::new(),
            opt_outs: BTreeMap::new(),
            activities: Vec::new(),
            webhooks: Vec::new(),
            sent: HashMap::new(),
            sent_account: HashMap::new(),
            next_id: 1,
            window: VecDeque::new(),
            rate_limited: 0,
            requests: 0,
            fail_next: None,
            undelivered: Vec::new(),
        };
        let email = format!("sales@{}.example", state.account.id);
        state.add_mailbox(MailboxInput { email, daily_cap: Some(mailbox_cap) }, 0);
        state
    }

    /// What survives a restart: everything but the rate-limit window, counters and
    /// injected failures.
    pub fn to_saved(&self, token: &str) -> SavedAccount {
        SavedAccount {
            token: token.to_owned(),
            account: self.account.clone(),
            mailboxes: self.mailboxes.clone(),
            cadences: self.cadences.clone(),
            enrollments: self
                .enrollments
                .iter()
                .map(|e| StoredEnrollment { enrollment: e.enrollment.clone(), due_ms: e.due_ms })
                .collect(),
            opt_outs: self.opt_outs.clone(),
            activities: self.activities.clone(),
            webhooks: self
                .webhooks
                .iter()
                .map(|w| StoredWebhook { webhook: w.webhook.clone(), secret: w.secret.clone() })
                .collect(),
            sent: self.sent.iter().map(|((mailbox, day), n)| (mailbox.clone(), *day, *n)).collect(),
            sent_account: self.sent_account.iter().map(|(day, n)| (*day, *n)).collect(),
            next_id: self.next_id,
        }
    }

    pub fn from_saved(saved: SavedAccount) -> (String, Self) {
        let state = Self {
            account: saved.account,
            mailboxes: saved.mailboxes,
            cadences: saved.cadences,
            enrollments: saved.enrollments,
            opt_outs: saved.opt_outs,
            activities: saved.activities,
            webhooks: saved.webhooks,
            sent: saved.sent.into_iter().map(|(mailbox, day, n)| ((mailbox, day), n)).collect(),
            sent_account: saved.sent_account.into_iter().collect(),
            next_id: saved.next_id,
            window: VecDeque::new(),
            rate_limited: 0,
            requests: 0,
            fail_next: None,
            undelivered: Vec::new(),
        };
        (saved.token, state)
    }

    fn id(&mut self, prefix: &str) -> String {
        let id = format!("{prefix}_{}", self.next_id);
        self.next_id += 1;
        id
    }

    pub fn add_mailbox(&mut self, input: MailboxInput, now: i64) -> Mailbox {
        let id = self.id("mbx");
        let mailbox =
            Mailbox { id, email: input.email, daily_cap: input.daily_cap.unwrap_or(200).max(1), sent_today: 0 };
        self.mailboxes.push(mailbox.clone());
        self.mailbox_view(&mailbox.id, now).unwrap_or(mailbox)
    }

    pub fn mailbox_view(&self, id: &str, now: i64) -> Option<Mailbox> {
        let mut mailbox = self.mailboxes.iter().find(|m| m.id == id)?.clone();
        mailbox.sent_today = self.sent.get(&(mailbox.id.clone(), now.div_euclid(DAY_MS))).copied().unwrap_or(0);
        Some(mailbox)
    }

    fn validate(&self, input: &CadenceInput, except: Option<&str>) -> ApiResult<()> {
        if input.name.trim().is_empty() || input.name.len() > 200 {
            return Err(ApiError::invalid("name", "must be 1 to 200 characters"));
        }
        if input.steps.is_empty() || input.steps.len() > 50 {
            return Err(ApiError::invalid("steps", "a cadence has 1 to 50 steps"));
        }
        for (i, step) in input.steps.iter().enumerate() {
            if step.step_type.is_email() && step.template.is_none() {
                return Err(ApiError::invalid(&format!("steps[{i}].template"), "email steps need a template"));
            }
        }
        if let Some(mailbox) = &input.mailbox_id
            && !self.mailboxes.iter().any(|m| &m.id == mailbox)
        {
            return Err(ApiError::invalid("mailboxId", "unknown mailbox"));
        }
        if let Some(w) = &input.send_window
            && window::next_open_ms(w, None, 0).is_none()
        {
            return Err(ApiError::invalid("sendWindow", "start must be before end, on at least one weekday"));
        }
        let taken = self.cadences.iter().any(|c| {
            c.state == CadenceState::Active && Some(c.id.as_str()) != except && c.definition.name == input.name
        });
        if taken {
            return Err(ApiError::conflict("invalid", format!("an active cadence is already named {:?}", input.name)));
        }
        Ok(())
    }

    pub fn create_cadence(&mut self, input: CadenceInput, now: i64) -> ApiResult<Cadence> {
        self.validate(&input, None)?;
        let cadence = Cadence {
            id: self.id("cad"),
            state: CadenceState::Active,
            version: 1,
            created_at: rfc3339(now),
            updated_at: rfc3339(now),
            updated_via: Some("api".into()),
            definition: input,
        };
        self.cadences.push(cadence.clone());
        Ok(cadence)
    }

    pub fn cadence(&self, id: &str) -> ApiResult<&Cadence> {
        self.cadences.iter().find(|c| c.id == id).ok_or_else(|| ApiError::not_found("cadence", id))
    }

    pub fn replace_cadence(
        &mut self,
        id: &str,
        input: CadenceInput,
        if_match: Option<u64>,
        via: &str,
        now: i64,
    ) -> ApiResult<Cadence> {
        let current = self.cadence(id)?;
        if current.state == CadenceState::Archived {
            return Err(ApiError::refused("cadence_archived", "an archived cadence cannot be edited"));
        }
        if let Some(expected) = if_match
            && expected != current.version
        {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "version_mismatch",
                "the cadence changed since",
            ));
        }
        self.validate(&input, Some(id))?;
        let cadence =
            self.cadences.iter_mut().find(|c| c.id == id).ok_or_else(|| ApiError::not_found("cadence", id))?;
        cadence.definition = input;
        cadence.version += 1;
        cadence.updated_at = rfc3339(now);
        cadence.updated_via = Some(via.to_owned());
        Ok(cadence.clone())
    }

    pub fn archive_cadence(&mut self, id: &str, now: i64) -> ApiResult<Cadence> {
        let cadence =
            self.cadences.iter_mut().find(|c| c.id == id).ok_or_else(|| ApiError::not_found("cadence", id))?;
        if cadence.state == CadenceState::Archived {
            return Ok(cadence.clone());
        }
        cadence.state = CadenceState::Archived;
        cadence.version += 1;
        cadence.updated_at = rfc3339(now);
        cadence.updated_via = Some("api".into());
        let archived = cadence.clone();
        let running: Vec<usize> = (0..self.enrollments.len())
            .filter(|&i| {
                self.enrollments[i].enrollment.cadence_id == id && self.enrollments[i].enrollment.state.is_running()
            })
            .collect();
        for i in running {
            self.end(i, EnrollmentState::Finished, ActivityType::Finished, now);
        }
        Ok(archived)
    }

    pub fn enroll(&mut self, input: EnrollmentInput, now: i64) -> ApiResult<Enrollment> {
        let email = norm(&input.contact.email);
        if !email.contains('@') {
            return Err(ApiError::invalid("contact.email", "must be an email address"));
        }
        let cadence = self.cadence(&input.cadence_id)?.clone();
        if cadence.state == CadenceState::Archived {
            return Err(ApiError::refused("cadence_archived", "the cadence is archived"));
        }
        if self.opt_outs.contains_key(&email) {
            return Err(ApiError::refused("opted_out", "the contact opted out"));
        }
        let running = self.enrollments.iter().any(|e| {
            e.enrollment.cadence_id == cadence.id
                && norm(&e.enrollment.contact.email) == email
                && e.enrollment.state.is_running()
        });
        if running {
            return Err(ApiError::conflict("already_enrolled", "the contact is already in this cadence"));
        }
        let mailbox_id = input
            .mailbox_id
            .clone()
            .or_else(|| cadence.definition.mailbox_id.clone())
            .or_else(|| self.mailboxes.first().map(|m| m.id.clone()));
        if let Some(m) = &input.mailbox_id
            && !self.mailboxes.iter().any(|x| &x.id == m)
        {
            return Err(ApiError::invalid("mailboxId", "unknown mailbox"));
        }
        let first_delay = cadence.definition.steps.first().map_or(0, |s| i64::from(s.delay_hours));
        let due = now + first_delay * HOUR_MS;
        let enrollment = Enrollment {
            id: self.id("enr"),
            cadence_id: cadence.id.clone(),
            contact: Contact { email, ..input.contact },
            mailbox_id,
            variables: input.variables,
            external_id: input.external_id,
            state: EnrollmentState::Active,
            current_step: 0,
            next_step_at: Some(rfc3339(due)),
            enrolled_at: rfc3339(now),
            ended_at: None,
        };
        self.activity(ActivityType::Enrolled, &enrollment, None, now);
        self.enrollments.push(StoredEnrollment { enrollment: enrollment.clone(), due_ms: Some(due) });
        self.run_due(now);
        Ok(self
            .enrollments
            .iter()
            .find(|e| e.enrollment.id == enrollment.id)
            .map_or(enrollment, |e| e.enrollment.clone()))
    }

    pub fn enrollment_index(&self, id: &str) -> ApiResult<usize> {
        self.enrollments.iter().position(|e| e.enrollment.id == id).ok_or_else(|| ApiError::not_found("enrollment", id))
    }

    pub fn transition(&mut self, id: &str, action: &str, now: i64) -> ApiResult<Enrollment> {
        let i = self.enrollment_index(id)?;
        let state = self.enrollments[i].enrollment.state;
        match (action, state) {
            ("pause", EnrollmentState::Active) => {
                self.enrollments[i].enrollment.state = EnrollmentState::Paused;
                self.enrollments[i].enrollment.next_step_at = None;
                let e = self.enrollments[i].enrollment.clone();
                self.activity(ActivityType::Paused, &e, None, now);
            }
            ("resume", EnrollmentState::Paused) => {
                let step = self.enrollments[i].enrollment.current_step as usize;
                let delay = self.step_delay(&self.enrollments[i].enrollment.cadence_id, step);
                let due = now + delay * HOUR_MS;
                let stored = &mut self.enrollments[i];
                stored.enrollment.state = EnrollmentState::Active;
                stored.due_ms = Some(due);
                stored.enrollment.next_step_at = Some(rfc3339(due));
                let e = stored.enrollment.clone();
                self.activity(ActivityType::Resumed, &e, None, now);
                self.run_due(now);
            }
            ("finish", s) if s.is_running() => self.end(i, EnrollmentState::Finished, ActivityType::Finished, now),
            _ => {
                return Err(ApiError::conflict(
                    "invalid_state",
                    format!("cannot {action} an enrollment that is {state:?}"),
                ));
            }
        }
        Ok(self.enrollments[i].enrollment.clone())
    }

    fn step_delay(&self, cadence_id: &str, step: usize) -> i64 {
        self.cadences
            .iter()
            .find(|c| c.id == cadence_id)
            .and_then(|c| c.definition.steps.get(step))
            .map_or(0, |s| i64::from(s.delay_hours))
    }

    fn end(&mut self, i: usize, state: EnrollmentState, activity: ActivityType, now: i64) {
        let stored = &mut self.enrollments[i];
        stored.enrollment.state = state;
        stored.enrollment.ended_at = Some(rfc3339(now));
        stored.enrollment.next_step_at = None;
        stored.due_ms = None;
        let e = stored.enrollment.clone();
        self.activity(activity, &e, None, now);
    }

    pub fn opt_out(&mut self, input: OptOutInput, now: i64) -> ApiResult<OptOut> {
        let email = norm(&input.email);
        if !email.contains('@') {
            return Err(ApiError::invalid("email", "must be an email address"));
        }
        if let Some(existing) = self.opt_outs.get(&email) {
            return Ok(existing.clone());
        }
        let opt_out = OptOut { email: email.clone(), reason: input.reason, created_at: rfc3339(now) };
        self.opt_outs.insert(email.clone(), opt_out.clone());
        self.end_running_of(&email, EnrollmentState::OptedOut, ActivityType::OptedOut, None, now);
        Ok(opt_out)
    }

    /// A reply or bounce from `email`: recorded, and the enrollments whose cadence exits on it end.
    pub fn contact_event(&mut self, email: &str, activity: ActivityType, now: i64) {
        let email = norm(email);
        let state = if activity == ActivityType::Replied { EnrollmentState::Replied } else { EnrollmentState::Bounced };
        let exits: Vec<String> = self
            .cadences
            .iter()
            .filter(|c| match activity {
                ActivityType::Replied => c.definition.exit_rules.on_reply,
                _ => c.definition.exit_rules.on_bounce,
            })
            .map(|c| c.id.clone())
            .collect();
        let touched = self.end_running_of(&email, state, activity, Some(&exits), now);
        if touched == 0 {
            let now_s = rfc3339(now);
            let id = self.id("act");
            let a = Activity {
                id,
                activity_type: activity,
                email,
                enrollment_id: None,
                cadence_id: None,
                step: None,
                mailbox_id: None,
                subject: None,
                body: None,
                occurred_at: now_s,
            };
            self.push_activity(a);
        }
    }

    fn end_running_of(
        &mut self,
        email: &str,
        state: EnrollmentState,
        activity: ActivityType,
        only_cadences: Option<&[String]>,
        now: i64,
    ) -> usize {
        let hits: Vec<usize> = (0..self.enrollments.len())
            .filter(|&i| {
                let e = &self.enrollments[i].enrollment;
                e.state.is_running()
                    && norm(&e.contact.email) == email
                    && only_cadences.is_none_or(|ids| ids.contains(&e.cadence_id))
            })
            .collect();
        for &i in &hits {
            self.end(i, state, activity, now);
        }
        hits.len()
    }

    fn activity(&mut self, kind: ActivityType, e: &Enrollment, extra: Option<StepDetail>, now: i64) {
        let id = self.id("act");
        let (step, mailbox_id, rendered) = match extra {
            Some((step, mailbox, rendered)) => (Some(step), mailbox, rendered),
            None => (None, None, None),
        };
        let (subject, body) = rendered.map_or((None, None), |(s, b)| (Some(s), Some(b)));
        self.push_activity(Activity {
            id,
            activity_type: kind,
            email: e.contact.email.clone(),
            enrollment_id: Some(e.id.clone()),
            cadence_id: Some(e.cadence_id.clone()),
            step,
            mailbox_id,
            subject,
            body,
            occurred_at: rfc3339(now),
        });
    }

    fn push_activity(&mut self, activity: Activity) {
        if !self.webhooks.is_empty() {
            self.undelivered.push(activity.clone());
        }
        self.activities.push(activity);
    }

    /// Runs every step due at `now`; returns how many ran.
    pub fn run_due(&mut self, now: i64) -> usize {
        let mut ran = 0;
        for i in 0..self.enrollments.len() {
            // Several steps with no delay run back to back.
            while self.run_one(i, now) {
                ran += 1;
            }
        }
        ran
    }

    fn run_one(&mut self, i: usize, now: i64) -> bool {
        let stored = &self.enrollments[i];
        let (Some(due), EnrollmentState::Active) = (stored.due_ms, stored.enrollment.state) else { return false };
        if due > now {
            return false;
        }
        let Some(cadence) = self.cadences.iter().find(|c| c.id == stored.enrollment.cadence_id).cloned() else {
            return false;
        };
        let index = stored.enrollment.current_step as usize;
        let Some(step) = cadence.definition.steps.get(index).cloned() else {
            self.end(i, EnrollmentState::Finished, ActivityType::Finished, now);
            return false;
        };
        let e = stored.enrollment.clone();
        if step.step_type == StepType::AutoEmail {
            if let Some(window) = &cadence.definition.send_window {
                match window::next_open_ms(window, e.contact.time_zone.as_deref(), now) {
                    Some(open) if open > now => return self.defer(i, open),
                    Some(_) => {}
                    None => return false,
                }
            }
            let day = now.div_euclid(DAY_MS);
            let mailbox = e.mailbox_id.clone().unwrap_or_default();
            let cap = self.mailboxes.iter().find(|m| m.id == mailbox).map_or(u32::MAX, |m| m.daily_cap);
            let sent = self.sent.get(&(mailbox.clone(), day)).copied().unwrap_or(0);
            let sent_account = self.sent_account.get(&day).copied().unwrap_or(0);
            if sent >= cap || self.account.daily_send_cap.is_some_and(|c| sent_account >= c) {
                return self.defer(i, (day + 1) * DAY_MS);
            }
            *self.sent.entry((mailbox.clone(), day)).or_default() += 1;
            *self.sent_account.entry(day).or_default() += 1;
            let rendered = render(&step, &e);
            self.activity(ActivityType::EmailSent, &e, Some((index as u32, Some(mailbox), Some(rendered))), now);
        } else {
            let rendered = step.step_type.is_email().then(|| render(&step, &e));
            self.activity(ActivityType::TaskCreated, &e, Some((index as u32, None, rendered)), now);
        }
        let next = index + 1;
        let stored = &mut self.enrollments[i];
        stored.enrollment.current_step = next as u32;
        match cadence.definition.steps.get(next) {
            Some(step) => {
                let due = now + i64::from(step.delay_hours) * HOUR_MS;
                stored.due_ms = Some(due);
                stored.enrollment.next_step_at = Some(rfc3339(due));
                true
            }
            None => {
                self.end(i, EnrollmentState::Finished, ActivityType::Finished, now);
                false
            }
        }
    }

    fn defer(&mut self, i: usize, until: i64) -> bool {
        let stored = &mut self.enrollments[i];
        stored.due_ms = Some(until);
        stored.enrollment.next_step_at = Some(rfc3339(until));
        false
    }

    pub fn activities_since(&self, since: Option<&str>, email: Option<&str>) -> Vec<Activity> {
        let since = since.and_then(parse_time);
        let email = email.map(norm);
        self.activities
            .iter()
            .filter(|a| since.is_none_or(|s| parse_time(&a.occurred_at).is_some_and(|t| t >= s)))
            .filter(|a| email.as_ref().is_none_or(|e| &a.email == e))
            .cloned()
            .collect()
    }
}

fn render(step: &Step, e: &Enrollment) -> (String, String) {
    let mut vars = e.variables.clone();
    vars.insert("email".into(), e.contact.email.clone());
    for (key, value) in
        [("firstName", &e.contact.first_name), ("lastName", &e.contact.last_name), ("company", &e.contact.company)]
    {
        if let Some(v) = value {
            vars.insert(key.into(), v.clone());
        }
    }
    match &step.template {
        Some(t) => (template::render(&t.subject, &vars), template::render(&t.body, &vars)),
        None => (String::new(), step.instructions.clone().unwrap_or_default()),
    }
}

//! The outreach vendor behind an adapter: what upso-cadence needs from an outreach
//! platform, in GoMark's own terms, so another vendor can be added beside Upso.

use crate::Result;
use async_trait::async_trait;
use gtm_config::{Cadence, CadenceStep, SendWindow, StepType};
use std::collections::{BTreeMap, HashMap, HashSet};
use upso_client::{CadenceState, EnrollmentState, UpsoClient, UpsoToken};

/// A cadence as the vendor holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteCadence {
    pub id: String,
    pub version: u64,
    pub active: bool,
    /// The desired-state key GoMark tagged it with (`gomark:<key>`), if the tag is still there.
    pub tagged_key: Option<String>,
    /// Its definition in GoMark's terms (`key` is `tagged_key` or empty).
    pub definition: Cadence,
}

/// One enrollment request.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollRequest {
    pub cadence_id: String,
    pub email: String,
    pub first_name: Option<String>,
    pub company: Option<String>,
    pub time_zone: Option<String>,
    pub mailbox_id: Option<String>,
    pub variables: BTreeMap<String, String>,
    /// GoMark's decision id, so the vendor's record points back to ours.
    pub external_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollOutcome {
    Enrolled {
        enrollment_id: String,
    },
    /// The vendor already has the contact running in this cadence.
    AlreadyEnrolled,
    /// The vendor refuses: the contact opted out there.
    OptedOut,
}

#[async_trait]
pub trait OutreachVendor: Send + Sync + 'static {
    /// The vendor's id of the account the token opens (checks the token).
    async fn account_id(&self, token: &UpsoToken) -> Result<String>;
    async fn cadences(&self, token: &UpsoToken) -> Result<Vec<RemoteCadence>>;
    async fn create_cadence(&self, token: &UpsoToken, cadence: &Cadence) -> Result<RemoteCadence>;
    async fn update_cadence(&self, token: &UpsoToken, id: &str, cadence: &Cadence) -> Result<RemoteCadence>;
    async fn archive_cadence(&self, token: &UpsoToken, id: &str) -> Result<()>;
    /// Mailbox ids, in the vendor's order (the first is the default).
    async fn mailboxes(&self, token: &UpsoToken) -> Result<Vec<String>>;
    /// Emails (lower case) running (active or paused) in the cadence.
    async fn running_in(&self, token: &UpsoToken, cadence_id: &str) -> Result<HashSet<String>>;
    /// Emails (lower case) that opted out.
    async fn opted_out(&self, token: &UpsoToken) -> Result<HashSet<String>>;
    /// The last time each contact was emailed, at or after `since_ms`, across every cadence.
    async fn last_touches(&self, token: &UpsoToken, since_ms: i64) -> Result<HashMap<String, i64>>;
    async fn enroll(&self, token: &UpsoToken, request: &EnrollRequest) -> Result<EnrollOutcome>;
}

/// The tag that carries a cadence's desired-state key in Upso.
pub const KEY_TAG_PREFIX: &str = "gomark:";
/// The tag on every cadence GoMark manages.
pub const MANAGED_TAG: &str = "gomark";

/// Upso, through `upso-client`.
#[derive(Debug, Clone)]
pub struct UpsoVendor {
    client: UpsoClient,
}

impl UpsoVendor {
    pub fn new(client: UpsoClient) -> Self {
        Self { client }
    }
}

fn step_type(t: StepType) -> upso_client::StepType {
    match t {
        StepType::AutoEmail => upso_client::StepType::AutoEmail,
        StepType::ManualEmail => upso_client::StepType::ManualEmail,
        StepType::Call => upso_client::StepType::Call,
        StepType::Task => upso_client::StepType::Task,
    }
}

fn step_type_back(t: upso_client::StepType) -> StepType {
    match t {
        upso_client::StepType::AutoEmail => StepType::AutoEmail,
        upso_client::StepType::ManualEmail => StepType::ManualEmail,
        upso_client::StepType::Call => StepType::Call,
        upso_client::StepType::Task => StepType::Task,
    }
}

/// GoMark's cadence as Upso's input: tagged so it can be recognised even without our records.
pub fn to_upso(c: &Cadence) -> upso_client::CadenceInput {
    let mut tags = vec![MANAGED_TAG.to_owned(), format!("{KEY_TAG_PREFIX}{}", c.key)];
    tags.extend(c.tags.iter().cloned());
    upso_client::CadenceInput {
        name: c.name.clone(),
        tags,
        mailbox_id: None,
        send_window: c.send_window.as_ref().map(|w| upso_client::SendWindow {
            time_zone: w.time_zone.clone(),
            start: w.start.clone(),
            end: w.end.clone(),
            weekdays: w.weekdays.clone(),
        }),
        exit_rules: upso_client::ExitRules { on_reply: c.exit_on_reply, on_bounce: c.exit_on_bounce },
        steps: c
            .steps
            .iter()
            .map(|s| upso_client::Step {
                step_type: step_type(s.step_type),
                delay_hours: s.delay_hours,
                template: match (&s.subject, &s.body) {
                    (Some(subject), Some(body)) => {
                        Some(upso_client::Template { subject: subject.clone(), body: body.clone() })
                    }
                    _ => None,
                },
                instructions: s.instructions.clone(),
            })
            .collect(),
    }
}

/// Upso's cadence in GoMark's terms.
pub fn from_upso(c: &upso_client::Cadence) -> RemoteCadence {
    let d = &c.definition;
    let tagged_key = d.tags.iter().find_map(|t| t.strip_prefix(KEY_TAG_PREFIX)).map(str::to_owned);
    let tags = d.tags.iter().filter(|t| *t != MANAGED_TAG && !t.starts_with(KEY_TAG_PREFIX)).cloned().collect();
    RemoteCadence {
        id: c.id.clone(),
        version: c.version,
        active: c.state == CadenceState::Active,
        definition: Cadence {
            key: tagged_key.clone().unwrap_or_default(),
            name: d.name.clone(),
            tags,
            send_window: d.send_window.as_ref().map(|w| SendWindow {
                time_zone: w.time_zone.clone(),
                start: w.start.clone(),
                end: w.end.clone(),
                weekdays: w.weekdays.clone(),
            }),
            exit_on_reply: d.exit_rules.on_reply,
            exit_on_bounce: d.exit_rules.on_bounce,
            steps: d
                .steps
                .iter()
                .map(|s| CadenceStep {
                    step_type: step_type_back(s.step_type),
                    delay_hours: s.delay_hours,
                    subject: s.template.as_ref().map(|t| t.subject.clone()),
                    body: s.template.as_ref().map(|t| t.body.clone()),
                    instructions: s.instructions.clone(),
                })
                .collect(),
            // GoMark's own: Upso does not hold them.
            sender: None,
            variables: Default::default(),
            localizable: None,
        },
        tagged_key,
    }
}

#[async_trait]
impl OutreachVendor for UpsoVendor {
    async fn account_id(&self, token: &UpsoToken) -> Result<String> {
        Ok(self.client.account(token).await?.id)
    }

    async fn cadences(&self, token: &UpsoToken) -> Result<Vec<RemoteCadence>> {
        Ok(self.client.list_cadences(token, None).await?.iter().map(from_upso).collect())
    }

    async fn create_cadence(&self, token: &UpsoToken, cadence: &Cadence) -> Result<RemoteCadence> {
        Ok(from_upso(&self.client.create_cadence(token, &to_upso(cadence)).await?))
    }

    async fn update_cadence(&self, token: &UpsoToken, id: &str, cadence: &Cadence) -> Result<RemoteCadence> {
        Ok(from_upso(&self.client.replace_cadence(token, id, &to_upso(cadence)).await?))
    }

    async fn archive_cadence(&self, token: &UpsoToken, id: &str) -> Result<()> {
        self.client.archive_cadence(token, id).await?;
        Ok(())
    }

    async fn mailboxes(&self, token: &UpsoToken) -> Result<Vec<String>> {
        Ok(self.client.list_mailboxes(token).await?.into_iter().map(|m| m.id).collect())
    }

    async fn running_in(&self, token: &UpsoToken, cadence_id: &str) -> Result<HashSet<String>> {
        let mut running = HashSet::new();
        for state in [EnrollmentState::Active, EnrollmentState::Paused] {
            for e in self.client.list_enrollments(token, Some(cadence_id), Some(state)).await? {
                running.insert(e.contact.email.to_ascii_lowercase());
            }
        }
        Ok(running)
    }

    async fn opted_out(&self, token: &UpsoToken) -> Result<HashSet<String>> {
        Ok(self.client.list_opt_outs(token).await?.into_iter().map(|o| o.email.to_ascii_lowercase()).collect())
    }

    async fn last_touches(&self, token: &UpsoToken, since_ms: i64) -> Result<HashMap<String, i64>> {
        let since = chrono::DateTime::from_timestamp_millis(since_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        let mut last = HashMap::new();
        for a in self.client.list_activities(token, since.as_deref()).await? {
            if !a.activity_type.is_touch() {
                continue;
            }
            let at = chrono::DateTime::parse_from_rfc3339(&a.occurred_at).map_or(0, |t| t.timestamp_millis());
            let entry = last.entry(a.email.to_ascii_lowercase()).or_insert(at);
            *entry = (*entry).max(at);
        }
        Ok(last)
    }

    async fn enroll(&self, token: &UpsoToken, r: &EnrollRequest) -> Result<EnrollOutcome> {
        let input = upso_client::EnrollmentInput {
            cadence_id: r.cadence_id.clone(),
            contact: upso_client::Contact {
                email: r.email.clone(),
                first_name: r.first_name.clone(),
                last_name: None,
                company: r.company.clone(),
                time_zone: r.time_zone.clone(),
            },
            mailbox_id: r.mailbox_id.clone(),
            variables: r.variables.clone(),
            external_id: Some(r.external_id.clone()),
        };
        match self.client.enroll(token, &input).await {
            Ok(e) => Ok(EnrollOutcome::Enrolled { enrollment_id: e.id }),
            Err(e) if e.code() == Some("already_enrolled") => Ok(EnrollOutcome::AlreadyEnrolled),
            Err(e) if e.code() == Some("opted_out") => Ok(EnrollOutcome::OptedOut),
            Err(e) => Err(e.into()),
        }
    }
}

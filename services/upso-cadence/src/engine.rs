//! The upsell engine: for one company, score its customers with each upsell rule, apply
//! the guardrails, and (unless it is a dry run) enroll the winners into the rule's cadence
//! in Upso, recording every enrollment and skip with its audit entry and event.

use crate::cadences::Cadences;
use crate::guardrails::{self, Decision, GuardFacts, Outcome, SkipReason};
use crate::outreach::{EnrollOutcome, EnrollRequest, OutreachVendor};
use crate::rules::{self, Customer};
use crate::store::{DecisionRow, Store};
use crate::{Error, Result};
use gomark_events::relay::RelayWaker;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// One customer's fate in a run.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateReport {
    pub rule_key: String,
    pub email: String,
    pub deal_id: String,
    pub score: f64,
    pub reasons: Vec<(String, f64)>,
    /// `None` when enrolled (or, in a dry run, when it would be).
    pub skip: Option<SkipReason>,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunReport {
    pub dry_run: bool,
    pub scored: u32,
    pub enrolled: u32,
    pub skipped: u32,
    pub candidates: Vec<CandidateReport>,
    pub note: String,
}

#[derive(Clone)]
pub struct Engine {
    store: Store,
    vendor: Arc<dyn OutreachVendor>,
    cadences: Cadences,
    relay: RelayWaker,
    /// One run per company at a time in this process (event, schedule and on-demand runs
    /// may coincide); across replicas the running-enrollment guard and Upso's own refusal
    /// of a second enrollment keep anyone from being enrolled twice.
    running: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Engine {
    pub fn new(store: Store, vendor: Arc<dyn OutreachVendor>, cadences: Cadences, relay: RelayWaker) -> Self {
        Self { store, vendor, cadences, relay, running: Arc::default() }
    }

    fn company_lock(&self, company_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(company_id.to_owned()).or_default().clone()
    }

    /// Runs the engine for `company_id` at `now_ms`; a dry run changes nothing anywhere.
    pub async fn run(&self, company_id: &str, dry_run: bool, now_ms: i64) -> Result<RunReport> {
        let lock = self.company_lock(company_id);
        let _one_at_a_time = lock.lock().await;
        let mut report = RunReport { dry_run, ..RunReport::default() };
        let Some(config) = self.store.config(company_id).await? else {
            report.note = "no outreach configuration has been applied to this company".into();
            return Ok(report);
        };
        if config.upsell_rules.is_empty() {
            report.note = "the company has no upsell rules".into();
            return Ok(report);
        }
        let Some(token) = self.store.token(company_id).await? else {
            report.note = "the company has no Upso account registered".into();
            return Ok(report);
        };
        let deals = self.store.customer_deals(company_id).await?;
        let opted_out = self.vendor.opted_out(&token).await?;
        let mailboxes = self.vendor.mailboxes(&token).await?;
        let mut notes = Vec::new();
        for rule in &config.upsell_rules {
            let Some(cadence_id) = self.cadences.upso_id(company_id, &rule.cadence).await? else {
                notes.push(format!(
                    "rule {}: cadence {} is not in Upso yet (apply the configuration)",
                    rule.key, rule.cadence
                ));
                continue;
            };
            let gap_since = now_ms - i64::from(rule.guardrails.min_days_since_last_touch) * DAY_MS;
            let mut last_touch = self.vendor.last_touches(&token, gap_since).await?;
            for (email, at) in self.store.enrolled_since(company_id, gap_since).await? {
                let entry = last_touch.entry(email).or_insert(at);
                *entry = (*entry).max(at);
            }
            let upso_running = self.vendor.running_in(&token, &cadence_id).await?;
            if !dry_run {
                self.store.forget_ended(company_id, &rule.cadence, &upso_running).await?;
            }
            let mut running = self.store.running(company_id, &rule.cadence).await?;
            running.extend(upso_running);
            let (per_mailbox, company_today) = self.store.enrolled_today(company_id, now_ms).await?;
            let mut facts = GuardFacts {
                running,
                opted_out: opted_out.clone(),
                suppression_list: config.suppression_list.clone(),
                last_touch,
                mailboxes: mailboxes.iter().map(|m| (m.clone(), per_mailbox.get(m).copied().unwrap_or(0))).collect(),
                company_today,
            };
            let customers = rules::customers(&deals, rule);
            let ranked = rules::rank(rule, &customers, now_ms);
            let decisions = guardrails::decide(rule, &customers, &ranked, &mut facts, now_ms);
            report.scored += customers.len() as u32;
            let recent_skips = if dry_run {
                HashMap::new()
            } else {
                self.store.recent_skips(company_id, &rule.key, now_ms - DAY_MS).await?
            };
            for decision in decisions {
                let customer = &customers[decision.scored.customer];
                let candidate = if dry_run {
                    candidate(&rule.key, customer, &decision)
                } else {
                    self.carry_out(company_id, rule, &cadence_id, &token, customer, &decision, &recent_skips, now_ms)
                        .await?
                };
                match candidate.skip {
                    None => report.enrolled += 1,
                    Some(_) => report.skipped += 1,
                }
                report.candidates.push(candidate);
            }
        }
        report.note = notes.join("; ");
        if !dry_run {
            self.relay.wake();
            tracing::info!(company_id, enrolled = report.enrolled, skipped = report.skipped, "upsell engine ran");
            metrics::counter!("upsell_enrolled_total").increment(u64::from(report.enrolled));
        }
        Ok(report)
    }

    /// Enrolls (or records the skip of) one customer.
    #[allow(clippy::too_many_arguments)]
    async fn carry_out(
        &self,
        company_id: &str,
        rule: &gtm_config::UpsellRule,
        cadence_id: &str,
        token: &upso_client::UpsoToken,
        customer: &Customer,
        decision: &Decision,
        recent_skips: &HashMap<String, String>,
        now_ms: i64,
    ) -> Result<CandidateReport> {
        let mut report = candidate(&rule.key, customer, decision);
        let id = uuid::Uuid::now_v7().to_string();
        let mut row = DecisionRow {
            id: id.clone(),
            company_id: company_id.to_owned(),
            rule_key: rule.key.clone(),
            cadence_key: rule.cadence.clone(),
            email: customer.email.clone(),
            deal_id: customer.deal_id.clone(),
            score: decision.scored.score,
            reasons: decision.scored.reasons.clone(),
            decision: "skip".into(),
            skip_reason: String::new(),
            detail: report.detail.clone(),
            upso_enrollment_id: String::new(),
            mailbox_id: String::new(),
            decided_at: now_ms,
        };
        let mailbox_id = match &decision.outcome {
            Outcome::Skip { reason, .. } => {
                // Not-yet-candidates are not decisions; an unchanged skip is recorded once a day.
                if reason.is_eligibility() || recent_skips.get(&customer.email).is_some_and(|r| r == reason.as_str()) {
                    return Ok(report);
                }
                row.skip_reason = reason.as_str().into();
                let mut tx = self.store.db().begin().await?;
                self.store.record_decision(&mut tx, &row).await?;
                tx.commit().await?;
                return Ok(report);
            }
            Outcome::Enroll { mailbox_id } => mailbox_id.clone(),
        };
        // Take the guard first: a concurrent run on another replica now sees the contact
        // as running and leaves it alone.
        let mut tx = self.store.db().begin().await?;
        let claimed = self.store.claim_running(&mut tx, company_id, &rule.cadence, &customer.email, "pending").await?;
        tx.commit().await?;
        if !claimed {
            report.skip = Some(SkipReason::AlreadyEnrolled);
            report.detail = "already running in this cadence".into();
            return Ok(report);
        }
        let request = EnrollRequest {
            cadence_id: cadence_id.to_owned(),
            email: customer.email.clone(),
            first_name: customer.first_name.clone(),
            company: Some(customer.deal_name.clone()),
            time_zone: customer.time_zone.clone(),
            mailbox_id: Some(mailbox_id.clone()),
            variables: variables(customer),
            external_id: id.clone(),
        };
        let outcome = match self.vendor.enroll(token, &request).await {
            Ok(outcome) => outcome,
            Err(err) => {
                // Give the guard back: nothing was enrolled, a later run may try again.
                self.release(company_id, &rule.cadence, &customer.email).await?;
                return Err(err);
            }
        };
        let mut tx = self.store.db().begin().await?;
        match outcome {
            EnrollOutcome::Enrolled { enrollment_id } => {
                sqlx::query(
                    "UPDATE running_enrollments SET upso_enrollment_id = $1 WHERE company_id = $2 AND cadence_key = $3 AND email = $4",
                )
                .bind(&enrollment_id)
                .bind(company_id)
                .bind(&rule.cadence)
                .bind(&customer.email)
                .execute(&mut *tx)
                .await?;
                row.decision = "enroll".into();
                row.upso_enrollment_id = enrollment_id;
                row.mailbox_id = mailbox_id;
                row.detail = String::new();
            }
            EnrollOutcome::AlreadyEnrolled => {
                row.skip_reason = SkipReason::AlreadyEnrolled.as_str().into();
                row.detail = "Upso already runs the contact in this cadence".into();
                report.skip = Some(SkipReason::AlreadyEnrolled);
            }
            EnrollOutcome::OptedOut => {
                sqlx::query(
                    "DELETE FROM running_enrollments WHERE company_id = $1 AND cadence_key = $2 AND email = $3",
                )
                .bind(company_id)
                .bind(&rule.cadence)
                .bind(&customer.email)
                .execute(&mut *tx)
                .await?;
                row.skip_reason = SkipReason::OptedOut.as_str().into();
                row.detail = "Upso refused: opted out".into();
                report.skip = Some(SkipReason::OptedOut);
            }
        }
        report.detail = row.detail.clone();
        self.store.record_decision(&mut tx, &row).await?;
        tx.commit().await?;
        Ok(report)
    }

    async fn release(&self, company_id: &str, cadence_key: &str, email: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM running_enrollments WHERE company_id = $1 AND cadence_key = $2 AND email = $3 AND upso_enrollment_id = 'pending'",
        )
        .bind(company_id)
        .bind(cadence_key)
        .bind(email)
        .execute(self.store.db().pool())
        .await
        .map_err(Error::from)?;
        Ok(())
    }
}

/// The template variables an enrollment carries (`{{dealName}}`, `{{amount}}`, …).
fn variables(c: &Customer) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    vars.insert("dealName".into(), c.deal_name.clone());
    for (var, prop) in [
        ("amount", "amount"),
        ("renewalDate", "gomark_renewal_date"),
        ("productUsage", "gomark_product_usage"),
        ("seats", "gomark_seats"),
        ("tier", "gomark_customer_tier"),
    ] {
        if let Some(v) = c.properties.get(prop) {
            vars.insert(var.into(), v.clone());
        }
    }
    vars
}

fn candidate(rule_key: &str, customer: &Customer, decision: &Decision) -> CandidateReport {
    let (skip, detail) = match &decision.outcome {
        Outcome::Enroll { mailbox_id } => (None, format!("mailbox {mailbox_id}")),
        Outcome::Skip { reason, detail } => (Some(*reason), detail.clone()),
    };
    CandidateReport {
        rule_key: rule_key.to_owned(),
        email: customer.email.clone(),
        deal_id: customer.deal_id.clone(),
        score: decision.scored.score,
        reasons: decision.scored.reasons.clone(),
        skip,
        detail,
    }
}

//! The upsell engine: for one company, score its customers with each upsell rule, apply
//! the guardrails, and (unless it is a dry run) enroll the winners into the rule's cadence
//! in Upso, recording every enrollment and skip with its audit entry and event.

use crate::cadences::Cadences;
use crate::guardrails::{self, Calendar, Decision, GuardFacts, Outcome, SkipReason};
use crate::outreach::{EnrollOutcome, EnrollRequest, OutreachVendor};
use crate::portfolio::{PortfolioFacts, Suppression, SuppressionKind, person};
use crate::rules::{self, Customer};
use crate::store::{DecisionRow, Reservation, Store};
use crate::{Error, Result};
use futures::TryStreamExt as _;
use gomark_events::relay::RelayWaker;
use std::collections::{HashMap, HashSet};
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
    /// The company whose touch or opt-out caused the skip, when another company's did.
    pub caused_by: String,
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
    /// may coincide). Across replicas, every enrollment is reserved in a transaction under
    /// the company's and the person's cap locks ([`Store::reserve`]), so caps are exact and
    /// nobody is enrolled twice however many replicas run.
    running: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// The customers of one rule, scored and ranked, each kept slim.
struct Ranked {
    customers: Vec<Customer>,
    ranked: Vec<rules::Scored>,
}

impl Engine {
    pub fn new(store: Store, vendor: Arc<dyn OutreachVendor>, cadences: Cadences, relay: RelayWaker) -> Self {
        Self { store, vendor, cadences, relay, running: Arc::default() }
    }

    fn company_lock(&self, company_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(company_id.to_owned()).or_default().clone()
    }

    /// Streams the company's deals into customers, scoring each as it is complete.
    async fn rank(&self, company_id: &str, rule: &gtm_config::UpsellRule, now_ms: i64) -> Result<Ranked> {
        let mut deals = std::pin::pin!(self.store.customer_deals_by_email(company_id));
        let mut grouper = rules::Grouper::default();
        let mut out = Ranked { customers: Vec::new(), ranked: Vec::new() };
        let mut keep = |mut c: Customer| {
            out.ranked.push(rules::score(rule, &c, out.customers.len(), now_ms));
            c.slim();
            out.customers.push(c);
        };
        while let Some(deal) = deals.try_next().await? {
            if let Some(c) = grouper.push(deal, rule) {
                keep(c);
            }
        }
        if let Some(c) = grouper.finish(rule) {
            keep(c);
        }
        rules::sort_ranked(&mut out.ranked, &out.customers);
        Ok(out)
    }

    /// The portfolio's facts for this run: suppressions, every company's recent touches,
    /// people running elsewhere.
    async fn portfolio_facts(
        &self,
        company_id: &str,
        rules: &gtm_config::PortfolioContact,
        now_ms: i64,
    ) -> Result<PortfolioFacts> {
        let since = now_ms - person_window_ms(rules);
        Ok(PortfolioFacts {
            rules: rules.clone(),
            suppressed: self.store.suppressions().await?,
            touches: self.store.touches_since(since).await?,
            running_elsewhere: if rules.exclusive_cadences {
                self.store.running_elsewhere(company_id).await?
            } else {
                HashMap::new()
            },
        })
    }

    /// Upso's opt-outs of one company suppress the person for every company.
    async fn share_opt_outs(
        &self,
        company_id: &str,
        opted_out: &HashSet<String>,
        known: &PortfolioFacts,
    ) -> Result<()> {
        for email in opted_out {
            let who = person(email);
            if known.suppressed.contains_key(&who) {
                continue;
            }
            self.store.suppress(&opt_out(&who, company_id, gomark_storage::now_ms())).await?;
        }
        Ok(())
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
        let Some(calendar) = Calendar::from_config(&config.calendar) else {
            return Err(Error::invalid("outreach.timeZone", "is not a time zone GoMark knows"));
        };
        let opted_out = self.vendor.opted_out(&token).await?;
        let mailboxes = self.vendor.mailboxes(&token).await?;
        let mut portfolio = self.portfolio_facts(company_id, &config.portfolio_contact, now_ms).await?;
        if !dry_run {
            self.share_opt_outs(company_id, &opted_out, &portfolio).await?;
            portfolio.suppressed = self.store.suppressions().await?;
        }
        let mut notes = Vec::new();
        for rule in &config.upsell_rules {
            let Some(cadence_id) = self.cadences.upso_id(company_id, &rule.cadence).await? else {
                notes.push(format!(
                    "rule {}: cadence {} is not in Upso yet (apply the configuration)",
                    rule.key, rule.cadence
                ));
                continue;
            };
            let cadence = config.cadence(&rule.cadence);
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
            let rolling_hours: Vec<u32> = rule.guardrails.rolling_caps.iter().map(|c| c.hours).collect();
            let (per_mailbox, company_today, rolling) =
                self.store.company_counts(company_id, calendar.day_start_ms(now_ms), &rolling_hours, now_ms).await?;
            let mut facts = GuardFacts {
                company_id: company_id.to_owned(),
                running,
                opted_out: opted_out.clone(),
                suppression_list: config.suppression_list.clone(),
                last_touch,
                mailboxes: mailboxes.iter().map(|m| (m.clone(), per_mailbox.get(m).copied().unwrap_or(0))).collect(),
                company_today,
                rolling,
                sender: cadence.and_then(|c| c.sender.clone()),
                calendar: calendar.clone(),
                portfolio: std::mem::take(&mut portfolio),
                unknown_zones: 0,
            };
            let Ranked { customers, ranked } = self.rank(company_id, rule, now_ms).await?;
            let decisions = guardrails::decide(rule, &customers, ranked, &mut facts, now_ms);
            portfolio = std::mem::take(&mut facts.portfolio);
            if facts.unknown_zones > 0 {
                // Not silent: CRM data named zones GoMark does not know.
                metrics::counter!("upsell_time_zone_fallback_total").increment(u64::from(facts.unknown_zones));
                tracing::warn!(
                    company_id,
                    rule = %rule.key,
                    contacts = facts.unknown_zones,
                    "contacts' time zones are unknown; their quiet hours are read in the rule's default zone, their send window in the cadence's"
                );
            }
            report.scored += customers.len() as u32;
            let recent_skips = if dry_run {
                HashMap::new()
            } else {
                self.store.recent_skips(company_id, &rule.key, now_ms - DAY_MS).await?
            };
            let ctx = RunContext {
                company_id,
                rule,
                cadence,
                cadence_id: &cadence_id,
                token: &token,
                calendar: &calendar,
                portfolio: &config.portfolio_contact,
                now_ms,
            };
            for decision in decisions {
                let customer = &customers[decision.scored.customer];
                let candidate = if dry_run {
                    candidate(&rule.key, customer, decision)
                } else {
                    self.carry_out(&ctx, customer, &decision, &recent_skips).await?
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
    async fn carry_out(
        &self,
        ctx: &RunContext<'_>,
        customer: &Customer,
        decision: &Decision,
        recent_skips: &HashMap<String, String>,
    ) -> Result<CandidateReport> {
        let (company_id, rule) = (ctx.company_id, ctx.rule);
        let mut report = candidate(&rule.key, customer, decision.clone());
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
            decided_at: ctx.now_ms,
        };
        let mailbox_id = match &decision.outcome {
            Outcome::Skip(s) => {
                self.record_skip(&mut row, s.reason, recent_skips).await?;
                return Ok(report);
            }
            Outcome::Enroll { mailbox_id } => mailbox_id.clone(),
        };
        // Reserve first, exactly: under the company's and the person's cap locks, the caps
        // are counted again with what every replica reserved since this run's snapshot; a
        // concurrent run then sees the touch and the running guard, and leaves it alone.
        let who = person(&customer.email);
        let reservation = Reservation {
            id: &id,
            person: &who,
            email: &customer.email,
            company_id,
            cadence_key: &rule.cadence,
            mailbox_id: &mailbox_id,
            now_ms: ctx.now_ms,
            day_start_ms: ctx.calendar.day_start_ms(ctx.now_ms),
            rolling_hours: rule.guardrails.rolling_caps.iter().map(|c| c.hours).collect(),
            person_since_ms: ctx.now_ms - person_window_ms(ctx.portfolio),
        };
        let refused = self
            .store
            .reserve(&reservation, |counts| guardrails::recheck(rule, ctx.portfolio, company_id, counts, ctx.now_ms))
            .await?;
        if let Some(s) = refused {
            report.skip = Some(s.reason);
            report.detail = s.detail.clone();
            report.caused_by = s.caused_by.clone();
            row.detail = s.detail;
            self.record_skip(&mut row, s.reason, recent_skips).await?;
            return Ok(report);
        }
        let mut variables = ctx.cadence.map(|c| c.variables.clone()).unwrap_or_default();
        variables.insert("dealName".into(), customer.deal_name.clone());
        variables.extend(customer.variables.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let request = EnrollRequest {
            cadence_id: ctx.cadence_id.to_owned(),
            email: customer.email.clone(),
            first_name: customer.first_name.clone(),
            company: Some(customer.deal_name.clone()),
            time_zone: guardrails::upso_zone(customer.time_zone.as_deref()).0,
            mailbox_id: Some(mailbox_id.clone()),
            variables,
            external_id: id.clone(),
        };
        let outcome = match self.vendor.enroll(ctx.token, &request).await {
            Ok(outcome) => outcome,
            Err(err) => {
                // Give the reservation back: nothing was enrolled, a later run may try again.
                self.store.release(&id, company_id, &rule.cadence, &customer.email).await?;
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
                row.detail = guardrails::upso_zone(customer.time_zone.as_deref()).1.unwrap_or_default();
            }
            EnrollOutcome::AlreadyEnrolled => {
                self.store.drop_touch(&mut tx, &id).await?;
                row.skip_reason = SkipReason::AlreadyEnrolled.as_str().into();
                row.detail = "Upso already runs the contact in this cadence".into();
                report.skip = Some(SkipReason::AlreadyEnrolled);
            }
            EnrollOutcome::OptedOut => {
                self.store.drop_touch(&mut tx, &id).await?;
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
        if report.skip == Some(SkipReason::OptedOut) {
            self.store.suppress(&opt_out(&who, company_id, gomark_storage::now_ms())).await?;
        }
        Ok(report)
    }

    /// Records a skip, unless it is not a decision (not yet a candidate) or unchanged since
    /// yesterday (recorded once a day).
    async fn record_skip(
        &self,
        row: &mut DecisionRow,
        reason: SkipReason,
        recent_skips: &HashMap<String, String>,
    ) -> Result<()> {
        if reason.is_eligibility() || recent_skips.get(&row.email).is_some_and(|r| r == reason.as_str()) {
            return Ok(());
        }
        row.skip_reason = reason.as_str().into();
        let mut tx = self.store.db().begin().await?;
        self.store.record_decision(&mut tx, row).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// What one rule's enrollments share within a run.
struct RunContext<'a> {
    company_id: &'a str,
    rule: &'a gtm_config::UpsellRule,
    cadence: Option<&'a gtm_config::Cadence>,
    cadence_id: &'a str,
    token: &'a upso_client::UpsoToken,
    calendar: &'a Calendar,
    portfolio: &'a gtm_config::PortfolioContact,
    now_ms: i64,
}

/// How far back a person's touches matter to the portfolio rules.
fn person_window_ms(rules: &gtm_config::PortfolioContact) -> i64 {
    (i64::from(rules.window_days) * DAY_MS).max(i64::from(rules.min_hours_between_touches) * 3600 * 1000)
}

fn opt_out(person: &str, company_id: &str, now_ms: i64) -> Suppression {
    Suppression {
        person: person.to_owned(),
        kind: SuppressionKind::OptOut,
        source_company_id: company_id.to_owned(),
        reason: "opted out in Upso".into(),
        actor: "system:upsell-engine".into(),
        created_at: now_ms,
    }
}

fn candidate(rule_key: &str, customer: &Customer, decision: Decision) -> CandidateReport {
    let (skip, detail, caused_by) = match decision.outcome {
        Outcome::Enroll { mailbox_id } => {
            let detail = match guardrails::upso_zone(customer.time_zone.as_deref()).1 {
                Some(note) => format!("mailbox {mailbox_id}; {note}"),
                None => format!("mailbox {mailbox_id}"),
            };
            (None, detail, String::new())
        }
        Outcome::Skip(s) => (Some(s.reason), s.detail, s.caused_by),
    };
    CandidateReport {
        rule_key: rule_key.to_owned(),
        email: customer.email.clone(),
        deal_id: customer.deal_id.clone(),
        score: decision.scored.score,
        reasons: decision.scored.reasons,
        skip,
        detail,
        caused_by,
    }
}

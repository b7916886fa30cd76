//! upso-cadence's own schema: accounts, the applied outreach configuration, managed
//! cadences, the customers read model, decisions, the double-enrollment guard, audit.

use crate::Result;
use crate::credentials::Vault;
use crate::guardrails::CapCounts;
use crate::portfolio::{Suppression, SuppressionKind, Touch};
use gomark_storage::Database;
use gtm_config::{Cadence, CompanyCalendar, PortfolioContact, UpsellRule};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use upso_client::UpsoToken;

/// The outreach part of a company's effective configuration (what upso-cadence reads of
/// `gtm_config::EffectiveConfig`; the rest is ignored).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OutreachConfig {
    pub cadences: Vec<Cadence>,
    pub upsell_rules: Vec<UpsellRule>,
    pub suppression_list: Vec<String>,
    /// The company's time zone and holidays.
    pub calendar: CompanyCalendar,
    /// The portfolio's rules for a person across companies.
    pub portfolio_contact: PortfolioContact,
}

impl OutreachConfig {
    /// From its JSON form (fixtures, benchmarks).
    pub fn parse(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|_| crate::Error::invalid("desired", "is not a company configuration"))
    }

    /// The configuration a request carries, checked to be `company_id`'s own.
    pub fn from_proto(company_id: &str, desired: Option<gomark_proto::config::v1::OutreachConfig>) -> Result<Self> {
        let desired = desired.ok_or_else(|| crate::Error::invalid("desired", "is required"))?;
        if desired.company_id != company_id {
            return Err(crate::Error::invalid("desired.company_id", "belongs to another company"));
        }
        let config = gtm_config::wire::effective_from_outreach(desired)
            .map_err(|e| crate::Error::invalid(&format!("desired.{}", e.field), e.message))?;
        Ok(Self {
            cadences: config.cadences,
            upsell_rules: config.upsell_rules,
            suppression_list: config.suppression_list,
            calendar: config.calendar,
            portfolio_contact: config.portfolio_contact,
        })
    }

    pub fn cadence(&self, key: &str) -> Option<&Cadence> {
        self.cadences.iter().find(|c| c.key == key)
    }
}

/// A cadence GoMark manages in Upso, as it last wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedCadence {
    pub key: String,
    pub upso_id: String,
    pub definition: Cadence,
    pub upso_version: u64,
    pub archived: bool,
}

/// One deal naming a customer contact (the customers read model, fed by deal events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerDeal {
    pub deal_id: String,
    pub email: String,
    pub deal_name: String,
    pub stage: String,
    pub amount: Option<f64>,
    pub close_date_ms: i64,
    pub owner_id: String,
    pub properties: BTreeMap<String, String>,
    pub last_modified_ms: i64,
}

/// One enrollment decision, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRow {
    pub id: String,
    pub company_id: String,
    pub rule_key: String,
    pub cadence_key: String,
    pub email: String,
    pub deal_id: String,
    pub score: f64,
    pub reasons: Vec<(String, f64)>,
    pub decision: String,
    pub skip_reason: String,
    pub detail: String,
    pub upso_enrollment_id: String,
    pub mailbox_id: String,
    pub decided_at: i64,
}

#[derive(Clone)]
pub struct Store {
    db: Database,
    vault: Arc<Vault>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    pub fn new(db: Database, vault: Arc<Vault>) -> Self {
        Self { db, vault }
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The company an Upso account is registered to.
    pub async fn company_of_account(&self, account_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT company_id FROM accounts WHERE upso_account_id = $1")
            .bind(account_id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.try_get("company_id")).transpose()?)
    }

    pub async fn save_account(&self, company_id: &str, account_id: &str, token: &UpsoToken) -> Result<()> {
        let sealed = self.vault.seal(company_id, token)?;
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO accounts (company_id, upso_account_id, sealed_token, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (company_id) DO UPDATE SET upso_account_id = excluded.upso_account_id, \
             sealed_token = excluded.sealed_token, updated_at = excluded.updated_at",
        )
        .bind(company_id)
        .bind(account_id)
        .bind(&sealed)
        .bind(gomark_storage::now_ms())
        .execute(&mut *tx)
        .await?;
        // The token itself is never audited, only that it changed.
        audit(
            &mut tx,
            company_id,
            "system:upso-cadence",
            "upso.account.registered",
            &format!("upso-account/{account_id}"),
            None,
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The company's Upso token, if an account is registered.
    pub async fn token(&self, company_id: &str) -> Result<Option<UpsoToken>> {
        let row = sqlx::query("SELECT sealed_token FROM accounts WHERE company_id = $1")
            .bind(company_id)
            .fetch_optional(self.db.pool())
            .await?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some(self.vault.open(company_id, &row.try_get::<String, _>("sealed_token")?)?)),
        }
    }

    pub async fn save_config(
        &self,
        conn: &mut AnyConnection,
        company_id: &str,
        revision: i64,
        config: &OutreachConfig,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO outreach_config (company_id, revision, config, applied_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (company_id) DO UPDATE SET revision = excluded.revision, config = excluded.config, \
             applied_at = excluded.applied_at",
        )
        .bind(company_id)
        .bind(revision)
        .bind(serde_json::to_string(config)?)
        .bind(gomark_storage::now_ms())
        .execute(conn)
        .await?;
        Ok(())
    }

    /// The outreach configuration last applied to the company.
    pub async fn config(&self, company_id: &str) -> Result<Option<OutreachConfig>> {
        let row = sqlx::query("SELECT config FROM outreach_config WHERE company_id = $1")
            .bind(company_id)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| Ok(serde_json::from_str(&r.try_get::<String, _>("config")?)?)).transpose()
    }

    /// Companies whose applied configuration has upsell rules (the scheduled runs).
    pub async fn companies_with_config(&self) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT company_id FROM outreach_config ORDER BY company_id").fetch_all(self.db.pool()).await?;
        rows.iter().map(|r| Ok(r.try_get("company_id")?)).collect()
    }

    pub async fn managed(&self, company_id: &str) -> Result<Vec<ManagedCadence>> {
        let rows = sqlx::query(
            "SELECT cadence_key, upso_cadence_id, definition, upso_version, archived FROM managed_cadences \
             WHERE company_id = $1 ORDER BY cadence_key",
        )
        .bind(company_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ManagedCadence {
                    key: r.try_get("cadence_key")?,
                    upso_id: r.try_get("upso_cadence_id")?,
                    definition: serde_json::from_str(&r.try_get::<String, _>("definition")?)?,
                    upso_version: r.try_get::<i64, _>("upso_version")? as u64,
                    archived: r.try_get::<i32, _>("archived")? != 0,
                })
            })
            .collect()
    }

    pub async fn save_managed(
        &self,
        conn: &mut AnyConnection,
        company_id: &str,
        managed: &ManagedCadence,
        revision: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO managed_cadences (company_id, cadence_key, upso_cadence_id, definition, upso_version, archived, revision, applied_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (company_id, cadence_key) DO UPDATE SET \
             upso_cadence_id = excluded.upso_cadence_id, definition = excluded.definition, upso_version = excluded.upso_version, \
             archived = excluded.archived, revision = excluded.revision, applied_at = excluded.applied_at",
        )
        .bind(company_id)
        .bind(&managed.key)
        .bind(&managed.upso_id)
        .bind(serde_json::to_string(&managed.definition)?)
        .bind(managed.upso_version as i64)
        .bind(i32::from(managed.archived))
        .bind(revision)
        .bind(gomark_storage::now_ms())
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Records a deal version; false when an equal or newer version is already known.
    pub async fn upsert_customer_deal(
        &self,
        conn: &mut AnyConnection,
        company_id: &str,
        d: &CustomerDeal,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO customer_deals (company_id, deal_id, email, deal_name, stage, amount, close_date_ms, owner_id, properties, last_modified_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (company_id, deal_id) DO UPDATE SET \
             email = excluded.email, deal_name = excluded.deal_name, stage = excluded.stage, amount = excluded.amount, \
             close_date_ms = excluded.close_date_ms, owner_id = excluded.owner_id, properties = excluded.properties, \
             last_modified_ms = excluded.last_modified_ms WHERE customer_deals.last_modified_ms < excluded.last_modified_ms",
        )
        .bind(company_id)
        .bind(&d.deal_id)
        .bind(&d.email)
        .bind(&d.deal_name)
        .bind(&d.stage)
        .bind(d.amount)
        .bind(d.close_date_ms)
        .bind(&d.owner_id)
        .bind(serde_json::to_string(&d.properties)?)
        .bind(d.last_modified_ms)
        .execute(conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes each `(company_id, deal_id)` of `deals`, in one statement per 500.
    pub async fn delete_customer_deals(&self, conn: &mut AnyConnection, deals: &[(&str, &str)]) -> Result<()> {
        let engine = gomark_storage::Engine::of_connection(conn);
        for chunk in deals.chunks(500) {
            // Only placeholders are spliced in; the values are bound.
            let sql = format!(
                "DELETE FROM customer_deals WHERE (company_id, deal_id) IN (VALUES {})",
                engine.values_rows(chunk.len(), 2)
            );
            let mut delete = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (company_id, deal_id) in chunk {
                delete = delete.bind(*company_id).bind(*deal_id);
            }
            delete.execute(&mut *conn).await?;
        }
        Ok(())
    }

    pub async fn delete_customer_deal(&self, conn: &mut AnyConnection, company_id: &str, deal_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM customer_deals WHERE company_id = $1 AND deal_id = $2")
            .bind(company_id)
            .bind(deal_id)
            .execute(conn)
            .await?;
        Ok(())
    }

    pub async fn customer_deals(&self, company_id: &str) -> Result<Vec<CustomerDeal>> {
        let rows = sqlx::query(
            "SELECT deal_id, email, deal_name, stage, amount, close_date_ms, owner_id, properties, last_modified_ms \
             FROM customer_deals WHERE company_id = $1 ORDER BY deal_id",
        )
        .bind(company_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(deal_row).collect()
    }

    /// The company's deals one at a time, ordered by email (each customer's deals
    /// together), so a run never holds the whole company in memory.
    pub fn customer_deals_by_email<'a>(
        &'a self,
        company_id: &'a str,
    ) -> impl futures::Stream<Item = Result<CustomerDeal>> + Send + 'a {
        use futures::StreamExt as _;
        sqlx::query(
            "SELECT deal_id, email, deal_name, stage, amount, close_date_ms, owner_id, properties, last_modified_ms \
             FROM customer_deals WHERE company_id = $1 ORDER BY email, deal_id",
        )
        .bind(company_id)
        .fetch(self.db.pool())
        .map(|row| row.map_err(crate::Error::from).and_then(|r| deal_row(&r)))
    }

    /// Contacts GoMark enrolled in the cadence that Upso still runs.
    pub async fn running(&self, company_id: &str, cadence_key: &str) -> Result<HashSet<String>> {
        let rows = sqlx::query("SELECT email FROM running_enrollments WHERE company_id = $1 AND cadence_key = $2")
            .bind(company_id)
            .bind(cadence_key)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("email")?)).collect()
    }

    /// Forgets the guard of enrollments Upso no longer runs (finished, replied, …), so the
    /// contact may be enrolled again later.
    pub async fn forget_ended(
        &self,
        company_id: &str,
        cadence_key: &str,
        still_running: &HashSet<String>,
    ) -> Result<()> {
        for email in self.running(company_id, cadence_key).await? {
            if !still_running.contains(&email) {
                sqlx::query(
                    "DELETE FROM running_enrollments WHERE company_id = $1 AND cadence_key = $2 AND email = $3",
                )
                .bind(company_id)
                .bind(cadence_key)
                .bind(&email)
                .execute(self.db.pool())
                .await?;
            }
        }
        Ok(())
    }

    /// Takes the guard for one enrollment; false if the contact already holds it.
    pub async fn claim_running(
        &self,
        conn: &mut AnyConnection,
        company_id: &str,
        cadence_key: &str,
        email: &str,
        enrollment_id: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO running_enrollments (company_id, cadence_key, email, upso_enrollment_id, enrolled_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(company_id)
        .bind(cadence_key)
        .bind(email)
        .bind(enrollment_id)
        .bind(gomark_storage::now_ms())
        .execute(conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The last enrollment of each contact since `since_ms` (any cadence): a touch is coming.
    pub async fn enrolled_since(&self, company_id: &str, since_ms: i64) -> Result<HashMap<String, i64>> {
        let rows = sqlx::query(
            "SELECT email, MAX(decided_at) AS at FROM decisions WHERE company_id = $1 AND decision = 'enroll' \
             AND decided_at >= $2 GROUP BY email",
        )
        .bind(company_id)
        .bind(since_ms)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(|r| Ok((r.try_get("email")?, r.try_get("at")?))).collect()
    }

    /// The most recent skip reason of each contact for `rule_key` since `since_ms`, so an
    /// unchanged skip is not recorded again on every run.
    pub async fn recent_skips(
        &self,
        company_id: &str,
        rule_key: &str,
        since_ms: i64,
    ) -> Result<HashMap<String, String>> {
        let rows = sqlx::query(
            "SELECT email, skip_reason, decided_at FROM decisions WHERE company_id = $1 AND rule_key = $2 \
             AND decision = 'skip' AND decided_at >= $3 ORDER BY decided_at",
        )
        .bind(company_id)
        .bind(rule_key)
        .bind(since_ms)
        .fetch_all(self.db.pool())
        .await?;
        let mut last = HashMap::new();
        for r in rows {
            last.insert(r.try_get("email")?, r.try_get("skip_reason")?);
        }
        Ok(last)
    }

    /// Records one decision with its audit entry and event (in the caller's transaction).
    pub async fn record_decision(&self, conn: &mut AnyConnection, d: &DecisionRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO decisions (id, company_id, rule_key, cadence_key, email, deal_id, score, reasons, decision, skip_reason, detail, upso_enrollment_id, mailbox_id, decided_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&d.id)
        .bind(&d.company_id)
        .bind(&d.rule_key)
        .bind(&d.cadence_key)
        .bind(&d.email)
        .bind(&d.deal_id)
        .bind(d.score)
        .bind(serde_json::to_string(&d.reasons)?)
        .bind(&d.decision)
        .bind(&d.skip_reason)
        .bind(&d.detail)
        .bind(&d.upso_enrollment_id)
        .bind(&d.mailbox_id)
        .bind(d.decided_at)
        .execute(&mut *conn)
        .await?;
        let action = if d.decision == "enroll" { "upsell.enrolled" } else { "upsell.skipped" };
        let after = serde_json::json!({
            "email": d.email, "cadence": d.cadence_key, "rule": d.rule_key, "score": d.score,
            "skipReason": d.skip_reason, "detail": d.detail, "upsoEnrollmentId": d.upso_enrollment_id,
        });
        audit(conn, &d.company_id, "system:upsell-engine", action, &format!("decision/{}", d.id), None, Some(after))
            .await?;
        let event = gomark_proto::events::v1::UpsellDecided {
            company_id: d.company_id.clone(),
            decision_id: d.id.clone(),
            rule_key: d.rule_key.clone(),
            customer_email: d.email.clone(),
            deal_id: d.deal_id.clone(),
            score: d.score,
            decision: d.decision.clone(),
            skip_reason: d.skip_reason.clone(),
            upso_enrollment_id: d.upso_enrollment_id.clone(),
        };
        let envelope =
            gomark_events::envelope::new_event(&d.company_id, gomark_events::event_types::UPSELL_DECIDED, &event);
        gomark_events::outbox::enqueue(conn, &envelope).await?;
        Ok(())
    }

    pub async fn list_decisions(&self, company_id: &str, limit: i64) -> Result<Vec<DecisionRow>> {
        let rows = sqlx::query(
            "SELECT id, company_id, rule_key, cadence_key, email, deal_id, score, reasons, decision, skip_reason, detail, \
             upso_enrollment_id, mailbox_id, decided_at FROM decisions WHERE company_id = $1 \
             ORDER BY decided_at DESC, id DESC LIMIT $2",
        )
        .bind(company_id)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DecisionRow {
                    id: r.try_get("id")?,
                    company_id: r.try_get("company_id")?,
                    rule_key: r.try_get("rule_key")?,
                    cadence_key: r.try_get("cadence_key")?,
                    email: r.try_get("email")?,
                    deal_id: r.try_get("deal_id")?,
                    score: r.try_get("score")?,
                    reasons: serde_json::from_str(&r.try_get::<String, _>("reasons")?)?,
                    decision: r.try_get("decision")?,
                    skip_reason: r.try_get("skip_reason")?,
                    detail: r.try_get("detail")?,
                    upso_enrollment_id: r.try_get("upso_enrollment_id")?,
                    mailbox_id: r.try_get("mailbox_id")?,
                    decided_at: r.try_get("decided_at")?,
                })
            })
            .collect()
    }

    /// The company's audit entries, oldest first (tests and support read them).
    pub async fn audit_actions(&self, company_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT action FROM audit_log WHERE company_id = $1 ORDER BY seq")
            .bind(company_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("action")?)).collect()
    }
}

/// Where the portfolio's audit entries go (they belong to no single company).
pub const PORTFOLIO: &str = "portfolio";

/// One enrollment to reserve under the cap locks.
#[derive(Debug, Clone)]
pub struct Reservation<'a> {
    pub id: &'a str,
    pub person: &'a str,
    pub email: &'a str,
    pub company_id: &'a str,
    pub cadence_key: &'a str,
    pub mailbox_id: &'a str,
    pub now_ms: i64,
    /// The start of the company's calendar day.
    pub day_start_ms: i64,
    /// The rule's rolling windows, in hours.
    pub rolling_hours: Vec<u32>,
    /// How far back the person's touches matter (the longest portfolio window).
    pub person_since_ms: i64,
}

fn deal_row(r: &sqlx::any::AnyRow) -> Result<CustomerDeal> {
    Ok(CustomerDeal {
        deal_id: r.try_get("deal_id")?,
        email: r.try_get("email")?,
        deal_name: r.try_get("deal_name")?,
        stage: r.try_get("stage")?,
        amount: r.try_get("amount")?,
        close_date_ms: r.try_get("close_date_ms")?,
        owner_id: r.try_get("owner_id")?,
        properties: serde_json::from_str(&r.try_get::<String, _>("properties")?)?,
        last_modified_ms: r.try_get("last_modified_ms")?,
    })
}

fn suppression_row(r: &sqlx::any::AnyRow) -> Result<Suppression> {
    let kind: String = r.try_get("kind")?;
    Ok(Suppression {
        person: r.try_get("person")?,
        kind: SuppressionKind::parse(&kind).unwrap_or(SuppressionKind::DoNotContact),
        source_company_id: r.try_get("source_company_id")?,
        reason: r.try_get("reason")?,
        actor: r.try_get("actor")?,
        created_at: r.try_get("created_at")?,
    })
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Store {
    /// The whole portfolio suppression list, by person.
    pub async fn suppressions(&self) -> Result<HashMap<String, Suppression>> {
        let rows = sqlx::query(
            "SELECT person, kind, source_company_id, reason, actor, created_at FROM portfolio_suppressions ORDER BY person",
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(|r| suppression_row(r).map(|s| (s.person.clone(), s))).collect()
    }

    /// Puts a person on the portfolio suppression list (false: already on it), audited.
    pub async fn suppress(&self, s: &Suppression) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let done = sqlx::query(
            "INSERT INTO portfolio_suppressions (person, kind, source_company_id, reason, actor, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (person) DO NOTHING",
        )
        .bind(&s.person)
        .bind(s.kind.as_str())
        .bind(&s.source_company_id)
        .bind(&s.reason)
        .bind(&s.actor)
        .bind(s.created_at)
        .execute(&mut *tx)
        .await?;
        let added = done.rows_affected() == 1;
        if added {
            let after = serde_json::json!({
                "person": s.person, "kind": s.kind.as_str(), "sourceCompanyId": s.source_company_id, "reason": s.reason,
            });
            audit(
                &mut tx,
                PORTFOLIO,
                &s.actor,
                "portfolio.suppressed",
                &format!("person/{}", s.person),
                None,
                Some(after),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Takes a person off the portfolio suppression list (false: was not on it), audited.
    pub async fn unsuppress(&self, person: &str, actor: &str) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let before = sqlx::query(
            "SELECT person, kind, source_company_id, reason, actor, created_at FROM portfolio_suppressions WHERE person = $1",
        )
        .bind(person)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(before) = before else { return Ok(false) };
        let before = suppression_row(&before)?;
        sqlx::query("DELETE FROM portfolio_suppressions WHERE person = $1").bind(person).execute(&mut *tx).await?;
        let was = serde_json::json!({
            "person": before.person, "kind": before.kind.as_str(), "sourceCompanyId": before.source_company_id,
            "reason": before.reason,
        });
        audit(&mut tx, PORTFOLIO, actor, "portfolio.unsuppressed", &format!("person/{person}"), Some(was), None)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every company's touches since `since_ms`, by person.
    pub async fn touches_since(&self, since_ms: i64) -> Result<HashMap<String, Vec<Touch>>> {
        let rows = sqlx::query("SELECT person, company_id, at FROM touches WHERE at >= $1 ORDER BY at")
            .bind(since_ms)
            .fetch_all(self.db.pool())
            .await?;
        let mut out: HashMap<String, Vec<Touch>> = HashMap::new();
        for r in rows {
            out.entry(r.try_get("person")?)
                .or_default()
                .push(Touch { company_id: r.try_get("company_id")?, at: r.try_get("at")? });
        }
        Ok(out)
    }

    /// People running in a cadence of a company other than `company_id`.
    pub async fn running_elsewhere(&self, company_id: &str) -> Result<HashMap<String, (String, String)>> {
        let rows = sqlx::query(
            "SELECT person, company_id, cadence_key FROM running_enrollments WHERE company_id <> $1 AND person <> ''",
        )
        .bind(company_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(|r| Ok((r.try_get("person")?, (r.try_get("company_id")?, r.try_get("cadence_key")?)))).collect()
    }

    /// The company's enrollments since the start of its calendar day, per mailbox and in
    /// total, and within each rolling window (hours back from `now_ms`).
    pub async fn company_counts(
        &self,
        company_id: &str,
        day_start_ms: i64,
        rolling_hours: &[u32],
        now_ms: i64,
    ) -> Result<(HashMap<String, u32>, u32, Vec<u32>)> {
        let mut conn = self.db.pool().acquire().await?;
        company_counts(&mut conn, company_id, day_start_ms, rolling_hours, now_ms).await
    }

    /// Reserves one enrollment exactly: under the company's and the person's cap locks,
    /// counts what every replica has reserved, lets `check` refuse, and otherwise records
    /// the touch and takes the running-enrollment guard, all in one transaction.
    /// `Ok(None)` when reserved; `Ok(Some(skip))` when refused (nothing written).
    pub async fn reserve(
        &self,
        r: &Reservation<'_>,
        check: impl FnOnce(&CapCounts) -> Option<crate::guardrails::Skip>,
    ) -> Result<Option<crate::guardrails::Skip>> {
        let mut tx = self.db.begin().await?;
        // Company first, then person: every reservation locks in that order, so two
        // reservations never wait on each other in a circle.
        for scope in [format!("company:{}", r.company_id), format!("person:{}", r.person)] {
            sqlx::query(
                "INSERT INTO cap_locks (scope, n) VALUES ($1, 1) ON CONFLICT (scope) DO UPDATE SET n = cap_locks.n + 1",
            )
            .bind(&scope)
            .execute(&mut *tx)
            .await?;
        }
        let (per_mailbox, company_today, rolling) =
            company_counts(&mut tx, r.company_id, r.day_start_ms, &r.rolling_hours, r.now_ms).await?;
        let suppression = sqlx::query(
            "SELECT person, kind, source_company_id, reason, actor, created_at FROM portfolio_suppressions WHERE person = $1",
        )
        .bind(r.person)
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| suppression_row(&row))
        .transpose()?;
        let person_touches =
            sqlx::query("SELECT company_id, at FROM touches WHERE person = $1 AND at >= $2 ORDER BY at")
                .bind(r.person)
                .bind(r.person_since_ms)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| Ok(Touch { company_id: row.try_get("company_id")?, at: row.try_get("at")? }))
                .collect::<Result<Vec<_>>>()?;
        let running_elsewhere = sqlx::query(
            "SELECT company_id, cadence_key FROM running_enrollments WHERE person = $1 AND company_id <> $2 LIMIT 1",
        )
        .bind(r.person)
        .bind(r.company_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| Ok::<_, crate::Error>((row.try_get("company_id")?, row.try_get("cadence_key")?)))
        .transpose()?;
        let counts = CapCounts {
            company_today,
            mailbox_today: per_mailbox.get(r.mailbox_id).copied().unwrap_or(0),
            rolling,
            suppression,
            person_touches,
            running_elsewhere,
        };
        if let Some(refused) = check(&counts) {
            tx.rollback().await?;
            return Ok(Some(refused));
        }
        let claimed = sqlx::query(
            "INSERT INTO running_enrollments (company_id, cadence_key, email, upso_enrollment_id, enrolled_at, person) \
             VALUES ($1, $2, $3, 'pending', $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(r.company_id)
        .bind(r.cadence_key)
        .bind(r.email)
        .bind(r.now_ms)
        .bind(r.person)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(Some(crate::guardrails::Skip {
                reason: crate::guardrails::SkipReason::AlreadyEnrolled,
                detail: "already running in this cadence".into(),
                caused_by: String::new(),
            }));
        }
        sqlx::query(
            "INSERT INTO touches (id, person, company_id, cadence_key, mailbox_id, at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(r.id)
        .bind(r.person)
        .bind(r.company_id)
        .bind(r.cadence_key)
        .bind(r.mailbox_id)
        .bind(r.now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(None)
    }

    /// Gives a reservation back (Upso enrolled nobody): the touch, and the guard if still pending.
    pub async fn release(&self, touch_id: &str, company_id: &str, cadence_key: &str, email: &str) -> Result<()> {
        let mut tx = self.db.begin().await?;
        sqlx::query("DELETE FROM touches WHERE id = $1").bind(touch_id).execute(&mut *tx).await?;
        sqlx::query(
            "DELETE FROM running_enrollments WHERE company_id = $1 AND cadence_key = $2 AND email = $3 AND upso_enrollment_id = 'pending'",
        )
        .bind(company_id)
        .bind(cadence_key)
        .bind(email)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets a touch that did not happen (Upso already ran the contact, or refused).
    pub async fn drop_touch(&self, conn: &mut AnyConnection, touch_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM touches WHERE id = $1").bind(touch_id).execute(conn).await?;
        Ok(())
    }
}

async fn company_counts(
    conn: &mut AnyConnection,
    company_id: &str,
    day_start_ms: i64,
    rolling_hours: &[u32],
    now_ms: i64,
) -> Result<(HashMap<String, u32>, u32, Vec<u32>)> {
    let rows = sqlx::query(
        "SELECT mailbox_id, COUNT(*) AS n FROM touches WHERE company_id = $1 AND at >= $2 GROUP BY mailbox_id",
    )
    .bind(company_id)
    .bind(day_start_ms)
    .fetch_all(&mut *conn)
    .await?;
    let mut per_mailbox = HashMap::new();
    let mut total = 0;
    for r in rows {
        let n = count(r.try_get::<i64, _>("n")?);
        per_mailbox.insert(r.try_get::<String, _>("mailbox_id")?, n);
        total += n;
    }
    let mut rolling = Vec::with_capacity(rolling_hours.len());
    for hours in rolling_hours {
        let since = now_ms - i64::from(*hours) * 3600 * 1000;
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM touches WHERE company_id = $1 AND at > $2")
            .bind(company_id)
            .bind(since)
            .fetch_one(&mut *conn)
            .await?
            .try_get("n")?;
        rolling.push(count(n));
    }
    Ok((per_mailbox, total, rolling))
}

/// Appends one audit entry: who, what, when, before, after.
pub async fn audit(
    conn: &mut AnyConnection,
    company_id: &str,
    actor: &str,
    action: &str,
    resource: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (company_id, actor, action, resource, before_json, after_json, at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(company_id)
    .bind(actor)
    .bind(action)
    .bind(resource)
    .bind(before.map(|v| v.to_string()))
    .bind(after.map(|v| v.to_string()))
    .bind(gomark_storage::now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

//! pipeline-tracker's tables: deal history and read model written in batches, the stage
//! catalog, and the companies seen.

use crate::error::Result;
use crate::funnel::{DealHistory, PipelineInfo, StageInfo, StageKind, Version};
use gomark_storage::Database;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};

/// One deal version arriving from an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub company_id: String,
    pub deal_id: String,
    pub version: Version,
    pub name: String,
    pub owner_id: String,
}

/// Rows per INSERT: well under both engines' bind-parameter limits.
const ROWS_PER_STATEMENT: usize = 400;

fn placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let cols: Vec<String> = (1..=columns).map(|c| format!("${}", r * columns + c)).collect();
            format!("({})", cols.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One change of stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from_stage: Option<String>,
    pub to_stage: String,
    pub at_ms: i64,
    pub amount: f64,
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds the nine columns `deal_history` and `deals` share, in their order.
fn bind_version<'q>(q: AnyQuery<'q>, i: &Incoming) -> AnyQuery<'q> {
    let v = &i.version;
    q.bind(i.company_id.clone())
        .bind(i.deal_id.clone())
        .bind(v.modified_ms)
        .bind(v.pipeline_id.clone())
        .bind(v.stage_id.clone())
        .bind(v.amount.unwrap_or(0.0))
        .bind(v.close_date_ms)
        .bind(v.created_ms)
        .bind(i64::from(v.deleted))
}

/// A company as the tracker knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CompanyRow {
    pub company_id: String,
    pub name: String,
    pub version: i64,
}

#[derive(Clone)]
pub struct Store {
    db: Database,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Writes a batch of deal versions in one transaction; returns the companies touched.
    /// Repeated and stale versions change nothing: history keys on the modification time,
    /// and the read model only moves forward.
    pub async fn ingest(&self, batch: &[Incoming]) -> Result<Vec<String>> {
        // The newest version of each deal in this batch, for the read model (one statement
        // may not update the same row twice).
        let mut newest: HashMap<(&str, &str), &Incoming> = HashMap::new();
        let mut history: HashMap<(&str, &str, i64), &Incoming> = HashMap::new();
        for item in batch {
            history.insert((&item.company_id, &item.deal_id, item.version.modified_ms), item);
            let slot = newest.entry((&item.company_id, &item.deal_id)).or_insert(item);
            if item.version.modified_ms > slot.version.modified_ms {
                *slot = item;
            }
        }
        let history: Vec<&Incoming> = history.into_values().collect();
        let newest: Vec<&Incoming> = newest.into_values().collect();
        let mut companies: Vec<String> = newest.iter().map(|i| i.company_id.clone()).collect();
        companies.sort();
        companies.dedup();

        // A deal without an amount is stored (and counted) as 0, as HubSpot's reports do.
        let mut tx = self.db.begin().await?;
        for chunk in history.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO deal_history (company_id, deal_id, modified_ms, pipeline_id, stage_id, amount, \
                 close_date_ms, created_ms, deleted) VALUES {} ON CONFLICT DO NOTHING",
                placeholders(chunk.len(), 9)
            );
            // Only numbered placeholders are spliced in; the values are bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for i in chunk {
                q = bind_version(q, i);
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in newest.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO deals (company_id, deal_id, modified_ms, pipeline_id, stage_id, amount, close_date_ms, \
                 created_ms, deleted, name, owner_id) VALUES {} \
                 ON CONFLICT (company_id, deal_id) DO UPDATE SET modified_ms = excluded.modified_ms, \
                 pipeline_id = excluded.pipeline_id, stage_id = excluded.stage_id, amount = excluded.amount, \
                 close_date_ms = excluded.close_date_ms, created_ms = excluded.created_ms, deleted = excluded.deleted, \
                 name = excluded.name, owner_id = excluded.owner_id \
                 WHERE excluded.modified_ms > deals.modified_ms",
                placeholders(chunk.len(), 11)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for i in chunk {
                q = bind_version(q, i).bind(i.name.clone()).bind(i.owner_id.clone());
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in companies.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO companies (company_id, version) VALUES {} \
                 ON CONFLICT (company_id) DO UPDATE SET version = companies.version + 1",
                (1..=chunk.len()).map(|i| format!("(${i}, 1)")).collect::<Vec<_>>().join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for company in chunk {
                q = q.bind(company.clone());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(companies)
    }

    /// Every version of every deal of `company`, grouped by deal, oldest first.
    pub async fn history(&self, company_id: &str) -> Result<Vec<DealHistory>> {
        let rows = sqlx::query(
            "SELECT deal_id, modified_ms, pipeline_id, stage_id, amount, close_date_ms, created_ms, deleted \
             FROM deal_history WHERE company_id = $1 ORDER BY deal_id, modified_ms",
        )
        .bind(company_id.to_owned())
        .fetch_all(self.db.pool())
        .await?;
        let mut deals: Vec<DealHistory> = Vec::new();
        for row in rows {
            let deal_id: String = row.try_get(0)?;
            let version = Version {
                modified_ms: row.try_get(1)?,
                pipeline_id: row.try_get(2)?,
                stage_id: row.try_get(3)?,
                amount: Some(row.try_get(4)?),
                close_date_ms: row.try_get(5)?,
                created_ms: row.try_get(6)?,
                deleted: row.try_get::<i64, _>(7)? != 0,
            };
            match deals.last_mut() {
                Some(d) if d.deal_id == deal_id => d.versions.push(version),
                _ => deals.push(DealHistory { deal_id, versions: vec![version] }),
            }
        }
        Ok(deals)
    }

    /// The stage-transition log of one deal: `(from stage, to stage, at, amount)`, oldest
    /// first; the first entry has no `from`, a deletion goes to stage "".
    pub async fn transitions(&self, company_id: &str, deal_id: &str) -> Result<Vec<Transition>> {
        let rows = sqlx::query(
            "SELECT from_stage, to_stage, at_ms, amount FROM stage_transitions \
             WHERE company_id = $1 AND deal_id = $2 ORDER BY at_ms",
        )
        .bind(company_id.to_owned())
        .bind(deal_id.to_owned())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Transition {
                    from_stage: r.try_get(0)?,
                    to_stage: r.try_get(1)?,
                    at_ms: r.try_get(2)?,
                    amount: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// The company's pipelines as last configured, stages in display order.
    pub async fn pipelines(&self, company_id: &str) -> Result<Vec<PipelineInfo>> {
        let rows = sqlx::query(
            "SELECT pipeline_id, pipeline_label, stage_id, label, probability, is_closed, display_order, removed \
             FROM stages WHERE company_id = $1 ORDER BY pipeline_id, display_order, stage_id",
        )
        .bind(company_id.to_owned())
        .fetch_all(self.db.pool())
        .await?;
        let mut pipelines: BTreeMap<String, PipelineInfo> = BTreeMap::new();
        for row in rows {
            let pipeline_id: String = row.try_get(0)?;
            let probability: f64 = row.try_get(4)?;
            let stage = StageInfo {
                id: row.try_get(2)?,
                label: row.try_get(3)?,
                probability,
                kind: StageKind::of(row.try_get::<i64, _>(5)? != 0, probability),
                display_order: i32::try_from(row.try_get::<i64, _>(6)?).unwrap_or(i32::MAX),
                removed: row.try_get::<i64, _>(7)? != 0,
            };
            let label: String = row.try_get(1)?;
            pipelines
                .entry(pipeline_id.clone())
                .or_insert_with(|| PipelineInfo { id: pipeline_id, label, stages: Vec::new() })
                .stages
                .push(stage);
        }
        Ok(pipelines.into_values().collect())
    }

    /// Records the company's pipeline configuration; stages it no longer has are kept,
    /// marked removed.
    pub async fn replace_stages(&self, company_id: &str, pipelines: &[PipelineInfo]) -> Result<()> {
        let mut tx = self.db.begin().await?;
        sqlx::query("UPDATE stages SET removed = 1 WHERE company_id = $1")
            .bind(company_id.to_owned())
            .execute(&mut *tx)
            .await?;
        for p in pipelines {
            for s in &p.stages {
                sqlx::query(
                    "INSERT INTO stages (company_id, pipeline_id, stage_id, pipeline_label, label, probability, \
                     is_closed, display_order, removed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0) \
                     ON CONFLICT (company_id, pipeline_id, stage_id) DO UPDATE SET pipeline_label = excluded.pipeline_label, \
                     label = excluded.label, probability = excluded.probability, is_closed = excluded.is_closed, \
                     display_order = excluded.display_order, removed = 0",
                )
                .bind(company_id.to_owned())
                .bind(p.id.clone())
                .bind(s.id.clone())
                .bind(p.label.clone())
                .bind(s.label.clone())
                .bind(s.probability)
                .bind(i64::from(s.kind != StageKind::Open))
                .bind(i64::from(s.display_order))
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// `(pipeline, stage, live deals)` for every stage of the company that holds deals.
    pub async fn stage_usage(&self, company_id: &str) -> Result<Vec<(String, String, u64)>> {
        let rows = sqlx::query(
            "SELECT pipeline_id, stage_id, COUNT(*) FROM deals WHERE company_id = $1 AND deleted = 0 \
             GROUP BY pipeline_id, stage_id ORDER BY pipeline_id, stage_id",
        )
        .bind(company_id.to_owned())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, u64::try_from(r.try_get::<i64, _>(2)?).unwrap_or(0))))
            .collect()
    }

    pub async fn record_company(&self, company_id: &str, name: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO companies (company_id, name) VALUES ($1, $2) \
             ON CONFLICT (company_id) DO UPDATE SET name = excluded.name",
        )
        .bind(company_id.to_owned())
        .bind(name.to_owned())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Every company seen, by id.
    pub async fn companies(&self) -> Result<Vec<CompanyRow>> {
        let rows = sqlx::query("SELECT company_id, name, version FROM companies ORDER BY company_id")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| Ok(CompanyRow { company_id: r.try_get(0)?, name: r.try_get(1)?, version: r.try_get(2)? }))
            .collect()
    }

    /// The change counter of one company (0 when unseen).
    pub async fn company_version(&self, company_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT version FROM companies WHERE company_id = $1")
            .bind(company_id.to_owned())
            .fetch_optional(self.db.pool())
            .await?;
        Ok(match row {
            Some(r) => r.try_get(0)?,
            None => 0,
        })
    }

    /// The sum of every company's change counter: moves whenever any company changes.
    pub async fn portfolio_version(&self) -> Result<i64> {
        let row = sqlx::query("SELECT CAST(COALESCE(SUM(version), 0) AS BIGINT) FROM companies")
            .fetch_one(self.db.pool())
            .await?;
        Ok(row.try_get(0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_rows_then_columns() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}

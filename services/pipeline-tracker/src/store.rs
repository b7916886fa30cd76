//! pipeline-tracker's tables: deal history and read model written in batches, the stage
//! catalog, and the companies seen.

use crate::error::Result;
use crate::funnel::{DealHistory, PipelineInfo, StageInfo, StageKind, Version};
use gomark_proto::money::{Currency, parse_decimal};
use gomark_storage::{Database, Engine};
use rust_decimal::Decimal;
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

/// A deal moved to another stage or pipeline, as a webhook said before the deal was re-read
/// (`deal.stage_changed`): applied over a version modified before `at_ms`, the rest of the
/// deal as that version has it, and kept as a guessed version. The next version HubSpot gives
/// (the re-read, modified at or after `at_ms`) replaces the guesses at or before its instant,
/// so the history ends as if no move had come. At the same instant as the row a move is not
/// applied: the property may have changed twice within that millisecond.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub company_id: String,
    pub deal_id: String,
    pub at_ms: i64,
    pub stage_id: Option<String>,
    pub pipeline_id: Option<String>,
}

/// Rows per INSERT: well under both engines' bind-parameter limits.
const ROWS_PER_STATEMENT: usize = 400;

/// `$n`, or for a decimal column on Postgres `CAST($n AS NUMERIC)`: decimals travel as
/// text (the Any driver has no decimal type) and Postgres must be told to read them as
/// NUMERIC; SQLite stores the text itself, exactly.
fn decimal_param(engine: Engine, n: usize) -> String {
    match engine {
        Engine::Postgres => format!("CAST(${n} AS NUMERIC)"),
        Engine::Sqlite => format!("${n}"),
    }
}

/// A decimal column read back (selected as `CAST(column AS TEXT)`).
fn decimal_from_text(text: &str) -> Result<Decimal> {
    parse_decimal(text)
        .or_else(|_| Decimal::from_scientific(text.trim()))
        .map_err(|_| crate::error::Error::Internal(format!("stored amount {text:?} is not a decimal")))
}

/// The read model's columns a newer version replaces (the name has its own rule).
const NEWER_STATE: [&str; 9] = [
    "modified_ms",
    "pipeline_id",
    "stage_id",
    "amount",
    "close_date_ms",
    "created_ms",
    "deleted",
    "currency",
    "owner_id",
];

/// On upsert into `deals`: `column` takes the value of a version as new or newer. A tie
/// goes to the version: HubSpot's state at that instant, which a [`Move`] made at the same
/// instant only guessed in part.
fn newer_wins(column: &str) -> String {
    format!("CASE WHEN excluded.modified_ms >= deals.modified_ms THEN excluded.{column} ELSE deals.{column} END")
}

/// On upsert into `deals`: a name from any version when the deal has none yet, a newer
/// one's when both have one.
const NAME_ON_UPSERT: &str = "CASE WHEN excluded.name <> '' AND (excluded.modified_ms >= deals.modified_ms \
                              OR deals.name = '') THEN excluded.name ELSE deals.name END";

/// On insert into `deal_history`: a version replaces the one kept for the same instant (a
/// redelivery rewrites the same values; a [`Move`]'s guess gives way to HubSpot's state).
const HISTORY_ON_CONFLICT: &str = "ON CONFLICT (company_id, deal_id, modified_ms) DO UPDATE SET \
    pipeline_id = excluded.pipeline_id, stage_id = excluded.stage_id, amount = excluded.amount, \
    close_date_ms = excluded.close_date_ms, created_ms = excluded.created_ms, deleted = excluded.deleted, \
    currency = excluded.currency, guessed = 0";

/// What a version's write removes: the deal's guesses before its instant (the one at its
/// instant it overwrites). Only guesses: the partial index makes this a look into an
/// (almost always) empty index.
const GUESSES_BEFORE: &str = "h.guessed = 1 AND h.company_id = v.company_id AND h.deal_id = v.deal_id \
                              AND h.modified_ms < v.modified_ms";

/// `values` as a Postgres array literal (`{"a","b\\"c"}`), bound as one text parameter and
/// cast by the statement: the Any driver binds no arrays. Every element is quoted, so any
/// text (commas, braces, quotes, backslashes, `NULL`) arrives as itself.
fn pg_array<T: std::fmt::Display>(values: impl IntoIterator<Item = T>) -> String {
    use std::fmt::Write as _;
    let mut literal = String::from("{");
    for (n, value) in values.into_iter().enumerate() {
        literal.push_str(if n == 0 { "\"" } else { ",\"" });
        // Writing to a String cannot fail.
        let _ = write!(ArrayElement(&mut literal), "{value}");
        literal.push('"');
    }
    literal.push('}');
    literal
}

/// [`pg_array`] with `None` as SQL NULL.
fn pg_array_opt<T: std::fmt::Display>(values: impl IntoIterator<Item = Option<T>>) -> String {
    use std::fmt::Write as _;
    let mut literal = String::from("{");
    for (n, value) in values.into_iter().enumerate() {
        if n > 0 {
            literal.push(',');
        }
        match value {
            Some(value) => {
                literal.push('"');
                // Writing to a String cannot fail.
                let _ = write!(ArrayElement(&mut literal), "{value}");
                literal.push('"');
            }
            None => literal.push_str("NULL"),
        }
    }
    literal.push('}');
    literal
}

/// Writes into an array literal's quoted element, escaping what would end it.
struct ArrayElement<'a>(&'a mut String);

impl std::fmt::Write for ArrayElement<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            if c == '"' || c == '\\' {
                self.0.push('\\');
            }
            self.0.push(c);
        }
        Ok(())
    }
}

/// The ten columns of `deal_history` for `rows`, one array literal each, in table order.
/// A deal without an amount is stored (and counted) as 0, as HubSpot's reports do.
fn version_columns(rows: &[&Incoming]) -> [String; 10] {
    [
        pg_array(rows.iter().map(|i| &i.company_id)),
        pg_array(rows.iter().map(|i| &i.deal_id)),
        pg_array(rows.iter().map(|i| i.version.modified_ms)),
        pg_array(rows.iter().map(|i| &i.version.pipeline_id)),
        pg_array(rows.iter().map(|i| &i.version.stage_id)),
        pg_array(rows.iter().map(|i| i.version.amount.unwrap_or_default())),
        pg_array(rows.iter().map(|i| i.version.close_date_ms)),
        pg_array(rows.iter().map(|i| i.version.created_ms)),
        pg_array(rows.iter().map(|i| i64::from(i.version.deleted))),
        pg_array(rows.iter().map(|i| i.version.currency.as_ref().map_or("", |c| c.as_str()))),
    ]
}

/// `deal_history`'s columns; `deals` has the same and `name, owner_id` after them.
const VERSION_COLUMNS: &str =
    "company_id, deal_id, modified_ms, pipeline_id, stage_id, amount, close_date_ms, created_ms, deleted, currency";

/// How an insert into `deals` meets the deal's row: a newer version's state wins, and a
/// name is taken when the row has none.
static DEALS_ON_CONFLICT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "ON CONFLICT (company_id, deal_id) DO UPDATE SET {newer}, name = {NAME_ON_UPSERT} \
         WHERE excluded.modified_ms >= deals.modified_ms OR (deals.name = '' AND excluded.name <> '')",
        newer = NEWER_STATE.map(|c| format!("{c} = {}", newer_wins(c))).join(", "),
    )
});

/// How an insert into `companies` counts the batch: each company's counter moves by one and
/// comes back, read in the batch's own statement.
const COMPANIES_COUNTED: &str = "ON CONFLICT (company_id) DO UPDATE SET version = companies.version + 1 \
                                 RETURNING company_id, version";

/// [`Store::ingest_postgres`]'s statement: every column of the batch is one array parameter.
static INGEST_POSTGRES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    const VERSION_TYPES: [&str; 10] =
        ["TEXT", "TEXT", "BIGINT", "TEXT", "TEXT", "NUMERIC", "BIGINT", "BIGINT", "BIGINT", "TEXT"];
    let unnest = |first: usize, types: &[&str]| {
        let columns: Vec<String> =
            types.iter().enumerate().map(|(i, t)| format!("CAST(${} AS {t}[])", first + i)).collect();
        format!("UNNEST({})", columns.join(", "))
    };
    let deal_types: Vec<&str> = VERSION_TYPES.iter().copied().chain(["TEXT", "TEXT"]).collect();
    // Rows go in the arrays' order (key order), so concurrent batches lock alike.
    format!(
        // The guesses the batch's own versions overwrite are left to the insert: one statement
        // may not both delete and update a row.
        "WITH guesses AS (DELETE FROM deal_history AS h USING {newest_keys} AS v (company_id, deal_id, modified_ms) \
         WHERE {GUESSES_BEFORE} AND (h.company_id, h.deal_id, h.modified_ms) NOT IN (SELECT * FROM {history_keys})), \
         history AS (INSERT INTO deal_history ({VERSION_COLUMNS}) SELECT * FROM {history} \
         {HISTORY_ON_CONFLICT}), \
         newest AS (INSERT INTO deals ({VERSION_COLUMNS}, name, owner_id) SELECT * FROM {deals} {deals_on_conflict}) \
         INSERT INTO companies (company_id, version) SELECT company_id, 1 FROM {companies} AS c (company_id) \
         {COMPANIES_COUNTED}",
        history = unnest(1, &VERSION_TYPES),
        history_keys = unnest(1, &VERSION_TYPES[..3]),
        newest_keys = unnest(11, &VERSION_TYPES[..3]),
        deals = unnest(11, &deal_types),
        deals_on_conflict = DEALS_ON_CONFLICT.as_str(),
        companies = unnest(23, &["TEXT"]),
    )
});

/// [`Store::move_postgres`]'s statement: the moves of one round, each column one array. The
/// deals they apply to take the new stage or pipeline and the move's instant, and each such
/// row, as it now stands, is kept as the version at that instant. The round's companies are
/// counted by the primary query, which Postgres runs before the unreferenced data-modifying
/// parts: so this statement, like [`INGEST_POSTGRES`], locks its companies (sorted) before any
/// deal, and two statements touching one company take turns instead of deadlocking (they did
/// when this one counted the companies of the moved rows, after locking those rows).
static MOVE_POSTGRES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH moved AS (UPDATE deals AS d SET modified_ms = m.at_ms, \
         stage_id = COALESCE(m.stage_id, d.stage_id), pipeline_id = COALESCE(m.pipeline_id, d.pipeline_id) \
         FROM UNNEST(CAST($1 AS TEXT[]), CAST($2 AS TEXT[]), CAST($3 AS BIGINT[]), CAST($4 AS TEXT[]), \
         CAST($5 AS TEXT[])) AS m (company_id, deal_id, at_ms, stage_id, pipeline_id) \
         WHERE d.company_id = m.company_id AND d.deal_id = m.deal_id AND d.deleted = 0 AND d.modified_ms < m.at_ms \
         RETURNING d.company_id, d.deal_id, d.modified_ms, d.pipeline_id, d.stage_id, d.amount, d.close_date_ms, \
         d.created_ms, d.deleted, d.currency), \
         history AS (INSERT INTO deal_history ({VERSION_COLUMNS}, guessed) SELECT *, 1 FROM moved ON CONFLICT DO NOTHING) \
         INSERT INTO companies (company_id, version) SELECT company_id, 1 FROM UNNEST(CAST($6 AS TEXT[])) AS c (company_id) \
         {COMPANIES_COUNTED}"
    )
});

/// A batch ready to write: its distinct versions and each deal's newest one, both in key
/// order, the name each newest row takes, and the companies touched.
struct BatchRows<'a> {
    history: Vec<&'a Incoming>,
    newest: Vec<&'a Incoming>,
    /// One per `newest` row.
    names: Vec<&'a str>,
    companies: Vec<String>,
}

/// One change of stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from_stage: Option<String>,
    pub to_stage: String,
    pub at_ms: i64,
    pub amount: Decimal,
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds the ten columns `deal_history` and `deals` share, in their order.
fn bind_version<'q>(q: AnyQuery<'q>, i: &Incoming) -> AnyQuery<'q> {
    let v = &i.version;
    q.bind(i.company_id.clone())
        .bind(i.deal_id.clone())
        .bind(v.modified_ms)
        .bind(v.pipeline_id.clone())
        .bind(v.stage_id.clone())
        .bind(v.amount.unwrap_or_default().to_string())
        .bind(v.close_date_ms)
        .bind(v.created_ms)
        .bind(i64::from(v.deleted))
        .bind(v.currency.map(|c| c.to_string()).unwrap_or_default())
}

/// A company as the tracker knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CompanyRow {
    pub company_id: String,
    pub name: String,
    pub version: i64,
}

/// One stored exchange rate: 1 `from` = `rate` `to` on `date` (YYYY-MM-DD).
#[derive(Debug, Clone, PartialEq)]
pub struct FxRate {
    pub date: String,
    pub from: Currency,
    pub to: Currency,
    pub rate: Decimal,
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
        Ok(self.ingest_counted(batch).await?.into_iter().map(|(c, _)| c).collect())
    }

    /// [`Store::ingest`], returning each company touched with its change counter as this
    /// batch left it (the batch's own number: one more than the company had before it).
    pub async fn ingest_counted(&self, batch: &[Incoming]) -> Result<Vec<(String, i64)>> {
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
        // Deletions carry no name: each deal keeps the newest name seen, whatever the order
        // of delivery (waterfalls list deals by name).
        let mut names: HashMap<(&str, &str), (i64, &str)> = HashMap::new();
        for item in batch.iter().filter(|i| !i.name.is_empty()) {
            let slot = names.entry((&item.company_id, &item.deal_id)).or_insert((item.version.modified_ms, &item.name));
            if item.version.modified_ms > slot.0 {
                *slot = (item.version.modified_ms, &item.name);
            }
        }
        // In key order: batches written at once (by this replica or another) then take
        // their row locks in the same order and cannot deadlock.
        let mut history: Vec<&Incoming> = history.into_values().collect();
        history.sort_by(|a, b| {
            (&a.company_id, &a.deal_id, a.version.modified_ms).cmp(&(&b.company_id, &b.deal_id, b.version.modified_ms))
        });
        let mut newest: Vec<&Incoming> = newest.into_values().collect();
        newest.sort_by(|a, b| (&a.company_id, &a.deal_id).cmp(&(&b.company_id, &b.deal_id)));
        let companies =
            distinct_sorted(newest.iter().map(|i| i.company_id.as_str())).into_iter().map(str::to_owned).collect();

        let names: Vec<&str> = newest
            .iter()
            .map(|i| names.get(&(i.company_id.as_str(), i.deal_id.as_str())).map_or("", |(_, n)| *n))
            .collect();
        let rows = BatchRows { history, newest, names, companies };
        let mut counted = match self.db.engine() {
            Engine::Postgres => self.ingest_postgres(&rows).await?,
            Engine::Sqlite => self.ingest_sqlite(&rows).await?,
        };
        counted.sort();
        Ok(counted)
    }

    /// The batch in one statement (atomic without a transaction: one round trip instead
    /// of five), each column bound as one array. The statement's text is the same for every
    /// batch, so Postgres parses and plans it once per connection, not per batch size.
    async fn ingest_postgres(&self, rows: &BatchRows<'_>) -> Result<Vec<(String, i64)>> {
        let BatchRows { history, newest, names, companies } = rows;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(INGEST_POSTGRES.as_str()));
        for column in version_columns(history) {
            q = q.bind(column);
        }
        for column in version_columns(newest) {
            q = q.bind(column);
        }
        q = q.bind(pg_array(names.iter().copied())).bind(pg_array(newest.iter().map(|i| i.owner_id.as_str())));
        q = q.bind(pg_array(companies.iter().map(String::as_str)));
        // The counters come back from the same statement: read later, another batch's
        // increment could be taken for this one's.
        let rows = q.fetch_all(self.db.pool()).await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
    }

    /// The batch in one transaction of multi-row statements (SQLite has no arrays).
    async fn ingest_sqlite(&self, rows: &BatchRows<'_>) -> Result<Vec<(String, i64)>> {
        let BatchRows { history, newest, names, companies } = rows;
        let mut tx = self.db.begin().await?;
        for chunk in history.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sqlite_guesses_delete(chunk.len())));
            for i in chunk {
                q = q.bind(i.company_id.clone()).bind(i.deal_id.clone()).bind(i.version.modified_ms);
            }
            q.execute(&mut *tx).await?;
            let sql = format!(
                "INSERT INTO deal_history ({VERSION_COLUMNS}) VALUES {} {HISTORY_ON_CONFLICT}",
                Engine::Sqlite.values_rows(chunk.len(), 10)
            );
            // Only numbered placeholders are spliced in; the values are bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for i in chunk {
                q = bind_version(q, i);
            }
            q.execute(&mut *tx).await?;
        }
        for (chunk, names) in newest.chunks(ROWS_PER_STATEMENT).zip(names.chunks(ROWS_PER_STATEMENT)) {
            let sql = format!(
                "INSERT INTO deals ({VERSION_COLUMNS}, name, owner_id) VALUES {} {}",
                Engine::Sqlite.values_rows(chunk.len(), 12),
                DEALS_ON_CONFLICT.as_str()
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (i, name) in chunk.iter().zip(names) {
                q = bind_version(q, i).bind((*name).to_owned()).bind(i.owner_id.clone());
            }
            q.execute(&mut *tx).await?;
        }
        let counted = count_companies(&mut tx, companies).await?;
        tx.commit().await?;
        Ok(counted)
    }

    /// Applies `moves` (see [`Move`]); returns each company of the moves with its change
    /// counter as this call left it. A move over a version as new or newer, of a deal not
    /// known yet (its creation is still being re-read) or of a deleted one changes nothing.
    pub async fn apply_moves(&self, moves: &[Move]) -> Result<Vec<(String, i64)>> {
        let mut counted: Vec<(String, i64)> = Vec::new();
        for round in move_rounds(moves) {
            let touched = match self.db.engine() {
                Engine::Postgres => self.move_postgres(&round).await?,
                Engine::Sqlite => self.move_sqlite(&round).await?,
            };
            for (company, version) in touched {
                match counted.iter_mut().find(|(c, _)| *c == company) {
                    Some(slot) => slot.1 = slot.1.max(version),
                    None => counted.push((company, version)),
                }
            }
        }
        counted.sort();
        Ok(counted)
    }

    async fn move_postgres(&self, round: &[Move]) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(MOVE_POSTGRES.as_str()))
            .bind(pg_array(round.iter().map(|m| &m.company_id)))
            .bind(pg_array(round.iter().map(|m| &m.deal_id)))
            .bind(pg_array(round.iter().map(|m| m.at_ms)))
            .bind(pg_array_opt(round.iter().map(|m| m.stage_id.as_ref())))
            .bind(pg_array_opt(round.iter().map(|m| m.pipeline_id.as_ref())))
            .bind(pg_array(companies_of(round)))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
    }

    /// The round in one transaction: the deals' update returns each moved row, which is then
    /// kept as a version and counted.
    async fn move_sqlite(&self, round: &[Move]) -> Result<Vec<(String, i64)>> {
        let mut tx = self.db.begin().await?;
        for chunk in round.chunks(ROWS_PER_STATEMENT) {
            let moves = format!(
                "WITH m (company_id, deal_id, at_ms, stage_id, pipeline_id) AS (VALUES {})",
                Engine::Sqlite.values_rows(chunk.len(), 5)
            );
            // The deals move, then each row now at its move's instant is kept as a guess (a row
            // already there at that instant, a version's or a guess's, is kept as it is).
            let statements = [
                format!(
                    "{moves} UPDATE deals SET modified_ms = m.at_ms, stage_id = COALESCE(m.stage_id, deals.stage_id), \
                     pipeline_id = COALESCE(m.pipeline_id, deals.pipeline_id) FROM m \
                     WHERE deals.company_id = m.company_id AND deals.deal_id = m.deal_id AND deals.deleted = 0 \
                     AND deals.modified_ms < m.at_ms"
                ),
                format!(
                    "{moves} INSERT INTO deal_history ({VERSION_COLUMNS}, guessed) \
                     SELECT d.company_id, d.deal_id, d.modified_ms, d.pipeline_id, d.stage_id, d.amount, d.close_date_ms, \
                     d.created_ms, d.deleted, d.currency, 1 FROM deals AS d JOIN m \
                     ON d.company_id = m.company_id AND d.deal_id = m.deal_id AND d.modified_ms = m.at_ms \
                     WHERE d.deleted = 0 ON CONFLICT DO NOTHING"
                ),
            ];
            for sql in statements {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for m in chunk {
                    q = q
                        .bind(m.company_id.clone())
                        .bind(m.deal_id.clone())
                        .bind(m.at_ms)
                        .bind(m.stage_id.clone())
                        .bind(m.pipeline_id.clone());
                }
                q.execute(&mut *tx).await?;
            }
        }
        let counted = count_companies(&mut tx, &companies_of(round)).await?;
        tx.commit().await?;
        Ok(counted)
    }

    /// Every version of every deal of `company`, grouped by deal, oldest first.
    pub async fn history(&self, company_id: &str) -> Result<Vec<DealHistory>> {
        let rows = sqlx::query(
            "SELECT deal_id, modified_ms, pipeline_id, stage_id, CAST(amount AS TEXT), close_date_ms, created_ms, \
             deleted, currency FROM deal_history WHERE company_id = $1 ORDER BY deal_id, modified_ms",
        )
        .bind(company_id.to_owned())
        .fetch_all(self.db.pool())
        .await?;
        histories(rows)
    }

    /// Every version of the listed `(company, deal)` pairs, grouped by company then deal,
    /// oldest first: one query per few hundred deals, whatever the number of companies
    /// (a batch of deal events touches many companies).
    pub async fn histories_of(&self, deals: &[(String, String)]) -> Result<HashMap<String, Vec<DealHistory>>> {
        let mut out: HashMap<String, Vec<DealHistory>> = HashMap::new();
        for chunk in deals.chunks(ROWS_PER_STATEMENT) {
            let pairs = (0..chunk.len()).map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2)).collect::<Vec<_>>();
            let sql = format!(
                "SELECT company_id, deal_id, modified_ms, pipeline_id, stage_id, CAST(amount AS TEXT), close_date_ms, \
                 created_ms, deleted, currency FROM deal_history WHERE (company_id, deal_id) IN (VALUES {}) \
                 ORDER BY company_id, deal_id, modified_ms",
                pairs.join(", ")
            );
            // Only numbered placeholders are spliced in; the values are bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (company, deal) in chunk {
                q = q.bind(company.clone()).bind(deal.clone());
            }
            let mut rows = q.fetch_all(self.db.pool()).await?.into_iter().peekable();
            while let Some(first) = rows.peek() {
                let company: String = first.try_get(0)?;
                let mut of_company = Vec::new();
                while let Some(row) = rows.next_if(|r| r.try_get::<String, _>(0).is_ok_and(|c| c == company)) {
                    of_company.push(row);
                }
                out.entry(company).or_default().extend(histories_at(of_company, 1)?);
            }
        }
        Ok(out)
    }

    /// The stage-transition log of one deal: `(from stage, to stage, at, amount)`, oldest
    /// first; the first entry has no `from`, a deletion goes to stage "".
    pub async fn transitions(&self, company_id: &str, deal_id: &str) -> Result<Vec<Transition>> {
        let rows = sqlx::query(
            "SELECT from_stage, to_stage, at_ms, CAST(amount AS TEXT) FROM stage_transitions \
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
                    amount: decimal_from_text(&r.try_get::<String, _>(3)?)?,
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

    /// The last-seen names of the listed deals of `company` (deals without a name, or
    /// not stored, are left out).
    pub async fn deal_names(&self, company_id: &str, deal_ids: &[&str]) -> Result<HashMap<String, String>> {
        let mut names = HashMap::new();
        for chunk in deal_ids.chunks(ROWS_PER_STATEMENT) {
            let list = (2..chunk.len() + 2).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ");
            // Only numbered placeholders are spliced in; the values are bound.
            let sql = format!("SELECT deal_id, name FROM deals WHERE company_id = $1 AND deal_id IN ({list})");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(company_id.to_owned());
            for id in chunk {
                q = q.bind((*id).to_owned());
            }
            for row in q.fetch_all(self.db.pool()).await? {
                let name: String = row.try_get(1)?;
                if !name.is_empty() {
                    names.insert(row.try_get(0)?, name);
                }
            }
        }
        Ok(names)
    }

    /// Names the company.
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

    /// Stores rates in one transaction; a rate for a pair and date already stored is
    /// replaced.
    pub async fn put_fx_rates(&self, rates: &[FxRate]) -> Result<()> {
        let sql = format!(
            "INSERT INTO fx_rates (from_currency, to_currency, rate_date, rate) VALUES ($1, $2, $3, {}) \
             ON CONFLICT (from_currency, to_currency, rate_date) DO UPDATE SET rate = excluded.rate",
            decimal_param(self.db.engine(), 4)
        );
        let mut tx = self.db.begin().await?;
        for r in rates {
            // Only a numbered placeholder is spliced in; the values are bound.
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(r.from.to_string())
                .bind(r.to.to_string())
                .bind(r.date.clone())
                .bind(r.rate.to_string())
                .execute(&mut *tx)
                .await?;
        }
        // Every company's totals may convert differently now.
        sqlx::query("UPDATE companies SET version = version + 1").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The rate converting `from` into `to` on `date` (YYYY-MM-DD): the latest stored on
    /// or before it.
    pub async fn fx_rate(&self, from: Currency, to: Currency, date: &str) -> Result<Option<FxRate>> {
        let row = sqlx::query(
            "SELECT rate_date, CAST(rate AS TEXT) FROM fx_rates \
             WHERE from_currency = $1 AND to_currency = $2 AND rate_date <= $3 ORDER BY rate_date DESC LIMIT 1",
        )
        .bind(from.to_string())
        .bind(to.to_string())
        .bind(date.to_owned())
        .fetch_optional(self.db.pool())
        .await?;
        match row {
            Some(r) => Ok(Some(FxRate {
                date: r.try_get(0)?,
                from,
                to,
                rate: decimal_from_text(&r.try_get::<String, _>(1)?)?,
            })),
            None => Ok(None),
        }
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

/// Deal history rows (as [`Store::history`] selects them) grouped by deal.
fn histories(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<DealHistory>> {
    histories_at(rows, 0)
}

/// Moves `companies`' change counters on by one inside the caller's SQLite transaction;
/// returns each with its new counter.
async fn count_companies(conn: &mut sqlx::AnyConnection, companies: &[impl AsRef<str>]) -> Result<Vec<(String, i64)>> {
    let mut counted = Vec::with_capacity(companies.len());
    for chunk in companies.chunks(ROWS_PER_STATEMENT) {
        // The counters come back from the same statement, inside the transaction: read
        // after commit, another batch's increment could be taken for this one's.
        let sql = format!(
            "INSERT INTO companies (company_id, version) VALUES {} {COMPANIES_COUNTED}",
            Engine::Sqlite.values_rows(chunk.len(), 1).replace(')', ", 1)")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for company in chunk {
            q = q.bind(company.as_ref().to_owned());
        }
        for row in q.fetch_all(&mut *conn).await? {
            counted.push((row.try_get(0)?, row.try_get(1)?));
        }
    }
    Ok(counted)
}

/// SQLite's statement removing the guesses that `rows` versions (company, deal, modified)
/// replace. The versions drive (`CROSS JOIN` keeps them the outer loop): each seeks the
/// guesses' partial index, so the cost follows the batch, not the guesses kept. The former
/// `EXISTS` form ran the whole VALUES list once per kept guess: 16 ms a batch at 2,000
/// moves/s over 200 portals, and growing with the backlog of guesses.
fn sqlite_guesses_delete(rows: usize) -> String {
    format!(
        "WITH v (company_id, deal_id, modified_ms) AS (VALUES {}) DELETE FROM deal_history WHERE rowid IN \
         (SELECT h.rowid FROM v CROSS JOIN deal_history AS h WHERE {GUESSES_BEFORE})",
        Engine::Sqlite.values_rows(rows, 3)
    )
}

/// The companies of `moves`, sorted, once each.
fn companies_of(moves: &[Move]) -> Vec<&str> {
    distinct_sorted(moves.iter().map(|m| m.company_id.as_str()))
}

/// `ids` sorted, once each: the order every batch statement locks companies in.
fn distinct_sorted<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut ids: Vec<&str> = ids.collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// `moves` in rounds a statement each: a deal's moves at one instant joined into one, its
/// moves at different instants oldest first, one per round (a statement updates a row once).
/// Each round in key order, so concurrent writers lock rows alike.
fn move_rounds(moves: &[Move]) -> Vec<Vec<Move>> {
    let mut by_deal: BTreeMap<(&str, &str), BTreeMap<i64, Move>> = BTreeMap::new();
    for m in moves {
        let at = by_deal.entry((&m.company_id, &m.deal_id)).or_default();
        let joined = at.entry(m.at_ms).or_insert_with(|| Move { stage_id: None, pipeline_id: None, ..m.clone() });
        if m.stage_id.is_some() {
            joined.stage_id.clone_from(&m.stage_id);
        }
        if m.pipeline_id.is_some() {
            joined.pipeline_id.clone_from(&m.pipeline_id);
        }
    }
    let mut rounds: Vec<Vec<Move>> = Vec::new();
    for at in by_deal.into_values() {
        for (n, m) in at.into_values().enumerate() {
            if rounds.len() <= n {
                rounds.push(Vec::new());
            }
            rounds[n].push(m);
        }
    }
    rounds
}

/// [`histories`] of rows whose deal id is column `at` (the version's columns follow it).
fn histories_at(rows: Vec<sqlx::any::AnyRow>, at: usize) -> Result<Vec<DealHistory>> {
    let mut deals: Vec<DealHistory> = Vec::new();
    for row in rows {
        let deal_id: String = row.try_get(at)?;
        let version = Version {
            modified_ms: row.try_get(at + 1)?,
            pipeline_id: row.try_get(at + 2)?,
            stage_id: row.try_get(at + 3)?,
            amount: Some(decimal_from_text(&row.try_get::<String, _>(at + 4)?)?),
            close_date_ms: row.try_get(at + 5)?,
            created_ms: row.try_get(at + 6)?,
            deleted: row.try_get::<i64, _>(at + 7)? != 0,
            // '' (stored before currencies were known) counts in the company's currency.
            currency: row.try_get::<String, _>(at + 8)?.parse().ok(),
        };
        match deals.last_mut() {
            Some(d) if d.deal_id == deal_id => d.versions.push(version),
            _ => deals.push(DealHistory { deal_id, versions: vec![version] }),
        }
    }
    Ok(deals)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guesses' delete must seek the partial index once per version, never walk the
    /// guesses (cost growing with the backlog, as the `EXISTS` form did).
    #[tokio::test]
    async fn sqlite_guesses_delete_seeks_the_index_per_version() {
        let tdb = gomark_testkit::TestDatabase::sqlite();
        let db = Database::connect(&tdb.settings).await.expect("connect");
        db.migrate(&crate::MIGRATIONS).await.expect("migrate");
        let sql = format!("EXPLAIN QUERY PLAN {}", sqlite_guesses_delete(ROWS_PER_STATEMENT));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for n in 0..ROWS_PER_STATEMENT {
            q = q.bind("c1").bind(format!("d{n}")).bind(n as i64);
        }
        let plan: Vec<String> =
            q.fetch_all(db.pool()).await.expect("plan").iter().map(|r| r.try_get(3).expect("detail")).collect();
        assert!(
            plan.iter().any(|d| d.starts_with("SEARCH h USING") && d.contains("INDEX deal_history_guessed")),
            "{plan:#?}"
        );
        // Neither a walk of the guesses nor a Bloom filter made from them.
        assert!(!plan.iter().any(|d| d.starts_with("SCAN h") || d.contains("BLOOM FILTER ON h")), "{plan:#?}");
    }
}

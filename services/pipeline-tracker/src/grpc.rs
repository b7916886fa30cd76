//! The gRPC face of pipeline-tracker: every RPC checks the caller's scope, then asks the
//! tracker. Watch streams recompute on change and push through a one-slot buffer, so a
//! slow client holds only its own stream back.

use crate::store::FxRate;
use crate::tracker::Tracker;
use gomark_platform::{Caller, ErrorKind, PublicError, Role, Shutdown};
use gomark_proto::money::{Currency, parse_decimal};
use gomark_proto::pipeline_tracker::v1 as pb;
use gomark_proto::pipeline_tracker::v1::pipeline_tracker_service_server::PipelineTrackerService;
use gomark_proto::time::millis;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct PipelineTrackerGrpc {
    tracker: Arc<Tracker>,
    watch_poll: Duration,
    shutdown: Shutdown,
}

impl PipelineTrackerGrpc {
    pub fn new(tracker: Arc<Tracker>, watch_poll: Duration, shutdown: Shutdown) -> Self {
        Self { tracker, watch_poll, shutdown }
    }
}

/// A date the request must carry, as epoch ms.
fn required(at: Option<&gomark_proto::Timestamp>, field: &str) -> Result<i64, Status> {
    at.map(millis).ok_or_else(|| PublicError::invalid(field, "is required").into())
}

fn company_scope(caller: &Caller, company_id: &str) -> Result<(), Status> {
    Ok(caller.require_company(Role::Viewer, company_id)?)
}

/// The companies a portfolio request covers: the listed ones (each checked), or every
/// company for a portfolio-wide caller and its own company for a scoped one.
fn portfolio_scope(caller: &Caller, company_ids: &[String]) -> Result<Vec<String>, Status> {
    if company_ids.len() > 1_000 {
        return Err(PublicError::invalid("company_ids", "at most 1000 companies").into());
    }
    if company_ids.is_empty() {
        caller.require_role(Role::Viewer)?;
        return Ok(caller.scope.company().map(|c| vec![c.to_owned()]).unwrap_or_default());
    }
    for id in company_ids {
        company_scope(caller, id)?;
    }
    Ok(company_ids.to_vec())
}

/// Most exchange rates one call stores.
const MAX_RATES_PER_CALL: usize = 10_000;

/// Exchange rates apply to every company: only a portfolio-wide admin sets them.
fn portfolio_admin(caller: &Caller) -> Result<(), Status> {
    caller.require_role(Role::Admin)?;
    if caller.scope.company().is_some() {
        return Err(PublicError::new(ErrorKind::PermissionDenied, "exchange rates are portfolio-wide").into());
    }
    Ok(())
}

/// `fx_as_of` as epoch ms; 0 (now) when absent.
fn fx_as_of_ms(t: Option<&prost_types::Timestamp>) -> Result<i64, Status> {
    let Some(t) = t else { return Ok(0) };
    match t.seconds.checked_mul(1_000) {
        Some(ms) if ms > 0 => Ok(ms + i64::from(t.nanos / 1_000_000)),
        _ => Err(PublicError::invalid("fx_as_of", "must be a date after 1970").into()),
    }
}

/// One rate of a `PutFxRates` call, checked; errors name the rate's position.
fn fx_rate(i: usize, r: &pb::FxRate) -> Result<FxRate, Status> {
    let field = |name: &str| format!("rates[{i}].{name}");
    let date = chrono::NaiveDate::parse_from_str(r.date.trim(), "%Y-%m-%d")
        .map_err(|_| PublicError::invalid(field("date"), "must be a date such as 2026-03-31"))?;
    let code = |name: &str, value: &str| -> Result<Currency, Status> {
        value.parse().map_err(|_| PublicError::invalid(field(name), "must be an ISO 4217 code such as EUR").into())
    };
    let from = code("from_currency_code", &r.from_currency_code)?;
    let to = code("to_currency_code", &r.to_currency_code)?;
    if from == to {
        return Err(PublicError::invalid(field("to_currency_code"), "must differ from from_currency_code").into());
    }
    let rate = parse_decimal(&r.rate)
        .ok()
        .filter(|x| *x > rust_decimal::Decimal::ZERO)
        .ok_or_else(|| PublicError::invalid(field("rate"), "must be a positive decimal such as 1.0842"))?;
    Ok(FxRate { date: date.format("%Y-%m-%d").to_string(), from, to, rate })
}

/// Sends `compute()` now and again whenever `version()` moves and the figures differ
/// (`same` says when they do not); checks `version` whenever `changes` moves (a
/// change of what is watched, stored here or announced by another replica) and every `poll` (for a
/// change whose announcement was lost).
/// When the change itself carries newer figures (`fresh` of it: their version and value),
/// they are sent as they are, without asking `version` or `compute`.
#[allow(clippy::too_many_arguments)]
fn spawn_watch<T, S, F, C, CF, V, VF>(
    tracker: Arc<Tracker>,
    mut changes: tokio::sync::watch::Receiver<S>,
    poll: Duration,
    shutdown: Shutdown,
    fresh: F,
    compute: C,
    version: V,
    same: fn(&T, &T) -> bool,
) -> ReceiverStream<Result<T, Status>>
where
    T: Clone + Send + 'static,
    S: Send + Sync + 'static,
    F: Fn(&S) -> Option<(i64, T)> + Send + 'static,
    C: Fn(Arc<Tracker>) -> CF + Send + 'static,
    CF: Future<Output = crate::error::Result<T>> + Send,
    V: Fn(Arc<Tracker>) -> VF + Send + 'static,
    VF: Future<Output = crate::error::Result<i64>> + Send,
{
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut sent_version: Option<i64> = None;
        let mut sent: Option<T> = None;
        loop {
            let handed = fresh(&changes.borrow_and_update()).filter(|(v, _)| sent_version.is_none_or(|s| *v > s));
            let (current, handed) = match handed {
                Some((v, value)) => (v, Some(value)),
                None => match version(tracker.clone()).await {
                    Ok(v) => (v, None),
                    Err(err) => {
                        let _ = tx.send(Err(err.into())).await;
                        return;
                    }
                },
            };
            if sent_version != Some(current) {
                let update = match handed {
                    Some(value) => Ok(value),
                    None => compute(tracker.clone()).await.map_err(Status::from),
                };
                sent_version = Some(current);
                match update {
                    Ok(value) if sent.as_ref().is_some_and(|s| same(s, &value)) => {}
                    Ok(value) => {
                        // Waits for the client: only this stream waits, never ingest.
                        if tx.send(Ok(value.clone())).await.is_err() {
                            return;
                        }
                        sent = Some(value);
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
            tokio::select! {
                () = shutdown.wait() => return,
                () = tx.closed() => return,
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(poll) => {}
            }
        }
    });
    ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl PipelineTrackerService for PipelineTrackerGrpc {
    async fn get_funnel(&self, req: Request<pb::GetFunnelRequest>) -> Result<Response<pb::Funnel>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        company_scope(&caller, &r.company_id)?;
        // The tracker takes 0 for "now": an explicit epoch is a past date like any other.
        let as_of = r.as_of.as_ref().map_or(0, |t| match millis(t) {
            0 => 1,
            ms => ms,
        });
        Ok(Response::new(self.tracker.funnel(&r.company_id, &r.pipeline_id, as_of).await?))
    }

    async fn list_pipelines(
        &self,
        req: Request<pb::ListPipelinesRequest>,
    ) -> Result<Response<pb::ListPipelinesResponse>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        company_scope(&caller, &r.company_id)?;
        Ok(Response::new(self.tracker.pipelines(&r.company_id).await?))
    }

    async fn get_waterfall(&self, req: Request<pb::GetWaterfallRequest>) -> Result<Response<pb::Waterfall>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        company_scope(&caller, &r.company_id)?;
        let (from, to) = (required(r.from.as_ref(), "from")?, required(r.to.as_ref(), "to")?);
        Ok(Response::new(self.tracker.waterfall(&r.company_id, &r.pipeline_id, from, to, r.deal_limit).await?))
    }

    async fn get_periods(&self, req: Request<pb::GetPeriodsRequest>) -> Result<Response<pb::PeriodSeries>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        company_scope(&caller, &r.company_id)?;
        let (from, to) = (required(r.from.as_ref(), "from")?, required(r.to.as_ref(), "to")?);
        Ok(Response::new(self.tracker.periods(&r.company_id, &r.pipeline_id, &r.period, from, to).await?))
    }

    async fn get_portfolio_periods(
        &self,
        req: Request<pb::GetPortfolioPeriodsRequest>,
    ) -> Result<Response<pb::PeriodSeries>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        // A company-scoped caller counts its own company only.
        let ids = portfolio_scope(&caller, &r.company_ids)?;
        let (from, to) = (required(r.from.as_ref(), "from")?, required(r.to.as_ref(), "to")?);
        Ok(Response::new(self.tracker.portfolio_periods(&ids, &r.period, from, to).await?))
    }

    async fn get_portfolio(&self, req: Request<pb::GetPortfolioRequest>) -> Result<Response<pb::Portfolio>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        let ids = portfolio_scope(&caller, &r.company_ids)?;
        let page = r.page.unwrap_or_default();
        let as_of = fx_as_of_ms(r.fx_as_of.as_ref())?;
        Ok(Response::new(self.tracker.portfolio(&ids, page.page_size, &page.page_token, as_of).await?))
    }

    async fn put_fx_rates(
        &self,
        req: Request<pb::PutFxRatesRequest>,
    ) -> Result<Response<pb::PutFxRatesResponse>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        portfolio_admin(&caller)?;
        let r = req.into_inner();
        if r.rates.len() > MAX_RATES_PER_CALL {
            return Err(PublicError::invalid("rates", format!("at most {MAX_RATES_PER_CALL} rates per call")).into());
        }
        let rates = r.rates.iter().enumerate().map(|(i, rate)| fx_rate(i, rate)).collect::<Result<Vec<_>, _>>()?;
        self.tracker.store().put_fx_rates(&rates).await.map_err(Status::from)?;
        let companies: Vec<String> =
            self.tracker.store().companies().await?.into_iter().map(|c| c.company_id).collect();
        self.tracker.changed(&companies).await;
        Ok(Response::new(pb::PutFxRatesResponse { stored: rates.len() as u64 }))
    }

    async fn get_stage_usage(
        &self,
        req: Request<pb::GetStageUsageRequest>,
    ) -> Result<Response<pb::StageUsage>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        company_scope(&caller, &r.company_id)?;
        let usage = self.tracker.store().stage_usage(&r.company_id).await?;
        Ok(Response::new(pb::StageUsage {
            stages: usage
                .into_iter()
                .map(|(pipeline_id, stage_id, deal_count)| pb::StageCount { pipeline_id, stage_id, deal_count })
                .collect(),
        }))
    }

    async fn get_metric_definitions(
        &self,
        req: Request<pb::GetMetricDefinitionsRequest>,
    ) -> Result<Response<pb::MetricDefinitions>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        // The definitions are the portfolio's, the same for every company: any viewer.
        caller.require_role(Role::Viewer)?;
        Ok(Response::new(self.tracker.definitions_proto()))
    }

    async fn get_benchmarks(&self, req: Request<pb::GetBenchmarksRequest>) -> Result<Response<pb::Benchmarks>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        // Other companies' positions are theirs: a company-scoped caller sees its own only.
        let ids = portfolio_scope(&caller, &r.company_ids)?;
        if r.group_by.chars().count() > 64 {
            return Err(PublicError::invalid("group_by", "at most 64 characters").into());
        }
        Ok(Response::new(self.tracker.benchmarks(&r.metric, &r.group_by, &ids).await?))
    }

    type WatchFunnelStream = ReceiverStream<Result<pb::Funnel, Status>>;

    async fn watch_funnel(
        &self,
        req: Request<pb::GetFunnelRequest>,
    ) -> Result<Response<Self::WatchFunnelStream>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        company_scope(&caller, &r.company_id)?;
        if r.as_of.is_some() {
            return Err(PublicError::invalid("as_of", "a watch follows the present; leave it unset").into());
        }
        // Fail fast on an unknown pipeline, before the stream starts.
        self.tracker.funnel(&r.company_id, &r.pipeline_id, 0).await?;
        let company = r.company_id.clone();
        let pipeline = r.pipeline_id.clone();
        let stream = spawn_watch(
            self.tracker.clone(),
            self.tracker.changes.subscribe_company(&company),
            self.watch_poll,
            self.shutdown.clone(),
            move |change: &crate::live::CompanyChange| {
                let f = change.fresh.as_ref()?;
                Some((f.version, Tracker::funnel_in(&f.funnels, &pipeline)?))
            },
            move |t| {
                let r = r.clone();
                async move { t.funnel(&r.company_id, &r.pipeline_id, 0).await }
            },
            move |t| {
                let company = company.clone();
                async move { t.store().company_version(&company).await }
            },
            // The same figures at a later instant are no news.
            |a, b| pb::Funnel { as_of: b.as_of, ..a.clone() } == *b,
        );
        Ok(Response::new(stream))
    }

    type WatchPortfolioStream = ReceiverStream<Result<pb::Portfolio, Status>>;

    async fn watch_portfolio(
        &self,
        req: Request<pb::GetPortfolioRequest>,
    ) -> Result<Response<Self::WatchPortfolioStream>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        let ids = portfolio_scope(&caller, &r.company_ids)?;
        let page = r.page.unwrap_or_default();
        let as_of = fx_as_of_ms(r.fx_as_of.as_ref())?;
        let stream = spawn_watch(
            self.tracker.clone(),
            self.tracker.changes.subscribe(),
            self.watch_poll,
            self.shutdown.clone(),
            |_: &u64| None,
            move |t| {
                let (ids, page) = (ids.clone(), page.clone());
                async move { t.portfolio(&ids, page.page_size, &page.page_token, as_of).await }
            },
            |t| async move { t.store().portfolio_version().await },
            |a, b| a == b,
        );
        Ok(Response::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::funnel::Version;
    use crate::store::{Incoming, Store};
    use gomark_storage::Database;

    fn version(deal: usize, day: i64) -> Incoming {
        Incoming {
            company_id: "c1".into(),
            deal_id: deal.to_string(),
            version: Version {
                modified_ms: 1_000 + day,
                pipeline_id: "default".into(),
                stage_id: "appointmentscheduled".into(),
                amount: Some(rust_decimal::Decimal::TEN),
                currency: None,
                close_date_ms: 0,
                created_ms: 1_000,
                deleted: false,
            },
            name: String::new(),
            owner_id: String::new(),
        }
    }

    #[tokio::test]
    async fn a_client_that_never_reads_does_not_hold_ingest_back_and_then_gets_the_latest() {
        let tdb = gomark_testkit::TestDatabase::sqlite();
        let db = Database::connect(&tdb.settings).await.expect("connect");
        db.migrate(&crate::MIGRATIONS).await.expect("migrate");
        let store = Store::new(db);
        let catalog = Catalog::new(store.clone(), None, Duration::from_secs(60));
        let cache = Arc::new(gomark_cache::MemoryCache::new("watch"));
        let tracker = Arc::new(Tracker::new(store.clone(), catalog, cache, Duration::from_secs(60)));
        let grpc = PipelineTrackerGrpc::new(tracker.clone(), Duration::from_secs(60), Shutdown::new());
        let request =
            || Caller::system("test").request(pb::GetFunnelRequest { company_id: "c1".into(), ..Default::default() });
        let mut stream = grpc.watch_funnel(request()).await.expect("watch").into_inner();

        // 200 batches while nobody reads: every one is stored at once.
        for deal in 0..200 {
            let companies = store.ingest(&[version(deal, 0)]).await.expect("ingest");
            tracker.changed(&companies).await;
        }
        use tokio_stream::StreamExt as _;
        let mut seen = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("an update");
            let funnel = next.expect("open").expect("funnel");
            seen.push(funnel.open_count);
            if funnel.open_count == 200 {
                break;
            }
        }
        // The stream holds at most one update and one being computed; the rest coalesce.
        assert!(seen.len() <= 3, "{seen:?}");
    }
}

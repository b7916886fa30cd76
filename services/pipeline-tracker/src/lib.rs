//! pipeline-tracker: turns deal events into live funnels per company and for the
//! portfolio. This release serves its contract and health; funnels arrive with the
//! pipeline-tracker work.

use gomark_platform::server::{HealthNames, serve_grpc};
use gomark_platform::{Caller, ErrorKind, PublicError, Role, Shutdown};
use gomark_proto::pipeline_tracker::v1 as pb;
use gomark_proto::pipeline_tracker::v1::pipeline_tracker_service_server::{
    PipelineTrackerService, PipelineTrackerServiceServer,
};
use gomark_service::RunningService;
use tonic::{Request, Response, Status};

pub const NAME: &str = "pipeline-tracker";

/// Only the server and telemetry sections, for now.
pub type Settings = gomark_service::ServerOnlySettings;

struct PipelineTrackerGrpc;

#[tonic::async_trait]
impl PipelineTrackerService for PipelineTrackerGrpc {
    async fn get_funnel(&self, req: Request<pb::GetFunnelRequest>) -> Result<Response<pb::Funnel>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let company_id = &req.get_ref().company_id;
        if company_id.is_empty() {
            return Err(PublicError::invalid("company_id", "is required").into());
        }
        caller.require(Role::Viewer, company_id)?;
        Err(PublicError::new(ErrorKind::Unimplemented, "funnels are not tracked by this GoMark release yet").into())
    }
}

pub async fn start(settings: Settings, shutdown: Shutdown) -> anyhow::Result<RunningService> {
    let listener = gomark_platform::server::bind(settings.server.grpc_addr, "gRPC").await?;
    let mut service = RunningService::new(NAME, listener.local_addr()?, shutdown.clone());
    let routes = tonic::service::Routes::new(PipelineTrackerServiceServer::new(PipelineTrackerGrpc));
    let grace = settings.server.shutdown_grace();
    service.spawn("grpc", async move {
        let names = HealthNames(vec!["gomark.pipeline_tracker.v1.PipelineTrackerService"]);
        Ok(serve_grpc(listener, routes, names, shutdown, grace).await?)
    });
    Ok(service)
}

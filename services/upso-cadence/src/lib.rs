//! upso-cadence: owns everything GoMark does in Upso, the portfolio's outreach platform
//! (cadences as desired state, the upsell engine). This release serves its contract and
//! health; cadence management itself arrives with the upso-cadence work.

use gomark_platform::server::{HealthNames, serve_grpc};
use gomark_platform::{Caller, ErrorKind, PublicError, Role, Shutdown};
use gomark_proto::upso_cadence::v1 as pb;
use gomark_proto::upso_cadence::v1::upso_cadence_service_server::{UpsoCadenceService, UpsoCadenceServiceServer};
use gomark_service::RunningService;
use tonic::{Request, Response, Status};

pub const NAME: &str = "upso-cadence";

/// Only the server and telemetry sections, for now.
pub type Settings = gomark_service::ServerOnlySettings;

struct UpsoCadenceGrpc;

#[tonic::async_trait]
impl UpsoCadenceService for UpsoCadenceGrpc {
    async fn modify_cadence(
        &self,
        req: Request<pb::ModifyCadenceRequest>,
    ) -> Result<Response<pb::ModifyCadenceResponse>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        if r.company_id.is_empty() {
            return Err(PublicError::invalid("company_id", "is required").into());
        }
        caller.require(Role::Operator, &r.company_id)?;
        Err(PublicError::new(
            ErrorKind::Unimplemented,
            "Upso cadences are not managed by this GoMark release yet; the change was not made",
        )
        .into())
    }
}

pub async fn start(settings: Settings, shutdown: Shutdown) -> anyhow::Result<RunningService> {
    let listener = gomark_platform::server::bind(settings.server.grpc_addr, "gRPC").await?;
    let mut service = RunningService::new(NAME, listener.local_addr()?, shutdown.clone());
    let routes = tonic::service::Routes::new(UpsoCadenceServiceServer::new(UpsoCadenceGrpc));
    let grace = settings.server.shutdown_grace();
    service.spawn("grpc", async move {
        let names = HealthNames(vec!["gomark.upso_cadence.v1.UpsoCadenceService"]);
        Ok(serve_grpc(listener, routes, names, shutdown, grace).await?)
    });
    Ok(service)
}

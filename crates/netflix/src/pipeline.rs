//! (Skeleton: filled by a helper.)

/// The pipeline service's name.
pub const PIPELINE_SERVICE: &str = "netflix-pipeline";

/// The pipeline's factory.
#[derive(Debug)]
pub struct PipelineService {
    pub config: crate::config::NetflixConfig,
}

impl casebook_kit::runtime::ServiceFactory for PipelineService {
    fn name(&self) -> &str {
        PIPELINE_SERVICE
    }

    fn start<'a>(
        &'a self,
        _ctx: &'a casebook_kit::runtime::InstanceContext,
    ) -> casebook_kit::runtime::BoxFuture<
        'a,
        Result<std::net::SocketAddr, casebook_kit::runtime::StartError>,
    > {
        Box::pin(async move { Err(anyhow::anyhow!("not built yet").into()) })
    }
}

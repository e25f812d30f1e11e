//! (Skeleton: filled by a helper.)

/// The origin service's name.
pub const ORIGIN_SERVICE: &str = "netflix-origin";

/// The origin's factory.
#[derive(Debug)]
pub struct OriginService {
    pub config: crate::config::NetflixConfig,
}

impl casebook_kit::runtime::ServiceFactory for OriginService {
    fn name(&self) -> &str {
        ORIGIN_SERVICE
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

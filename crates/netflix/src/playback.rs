//! (Skeleton: filled by a helper.)

/// The playback API service's name.
pub const PLAYBACK_SERVICE: &str = "netflix-playback";

/// The playback API's factory.
#[derive(Debug)]
pub struct PlaybackService {
    pub config: crate::config::NetflixConfig,
}

impl casebook_kit::runtime::ServiceFactory for PlaybackService {
    fn name(&self) -> &str {
        PLAYBACK_SERVICE
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

//! The projections a process hosts: each registered projection with what the projector tells of
//! it. Built once at start-up from the [`Registry`]; the admin rpcs, health and read-your-writes
//! waiters look projections up here by name.

use std::sync::Arc;

use sqlx::PgPool;

use super::{
    Projection, Registry,
    consumer::{Progress, Projector, ProjectorSettings},
    streams::Streams,
};

/// One hosted projection.
#[derive(Debug, Clone)]
pub struct Hosted {
    pub projection: Arc<dyn Projection>,
    pub progress: Progress,
}

/// Every hosted projection, in the order registered.
#[derive(Debug, Clone)]
pub struct Hosts {
    hosted: Arc<[Hosted]>,
}

impl Hosts {
    /// The projector of every registered projection (to be run), and what the rest of the
    /// service needs to know of them.
    pub fn start(
        registry: &Registry,
        pool: &PgPool,
        nats: &async_nats::Client,
        streams: &Streams,
        settings: &ProjectorSettings,
    ) -> (Self, Projector) {
        let projections: Vec<_> = registry.iter().cloned().collect();
        let (projector, progress) = Projector::new(
            projections.clone(),
            pool.clone(),
            nats.clone(),
            streams.clone(),
            settings.clone(),
        );
        let hosted: Vec<Hosted> = projections
            .into_iter()
            .zip(progress)
            .map(|(projection, progress)| Hosted {
                projection,
                progress,
            })
            .collect();
        (
            Self {
                hosted: hosted.into(),
            },
            projector,
        )
    }

    pub fn get(&self, name: &str) -> Option<&Hosted> {
        self.hosted.iter().find(|h| h.projection.name() == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Hosted> {
        self.hosted.iter()
    }
}

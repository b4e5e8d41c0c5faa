//! The projections a process hosts: each registered projection with its projector's progress
//! and its durable consumer. Built once at start-up from the [`Registry`]; the admin rpcs,
//! health and read-your-writes waiters look projections up here by name.

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
    /// Its durable JetStream consumer.
    pub consumer: String,
}

/// Every hosted projection, in the order registered.
#[derive(Debug, Clone)]
pub struct Hosts {
    hosted: Arc<[Hosted]>,
}

impl Hosts {
    /// A projector per registered projection (to be run), and what the rest of the service
    /// needs to know of them.
    pub fn start(
        registry: &Registry,
        pool: &PgPool,
        nats: &async_nats::Client,
        streams: &Streams,
        settings: &ProjectorSettings,
    ) -> (Self, Vec<Projector>) {
        let mut hosted = Vec::new();
        let mut projectors = Vec::new();
        for projection in registry.iter() {
            let (projector, progress) = Projector::new(
                projection.clone(),
                pool.clone(),
                nats.clone(),
                streams.clone(),
                settings.clone(),
            );
            hosted.push(Hosted {
                projection: projection.clone(),
                progress,
                consumer: settings.consumer_of(projection.name()),
            });
            projectors.push(projector);
        }
        (
            Self {
                hosted: hosted.into(),
            },
            projectors,
        )
    }

    pub fn get(&self, name: &str) -> Option<&Hosted> {
        self.hosted.iter().find(|h| h.projection.name() == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Hosted> {
        self.hosted.iter()
    }
}

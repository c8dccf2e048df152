//! Kubernetes Events on user-facing objects. Each notable step gets its own Event (no
//! aggregation by reason: the message says which member or role it is about).

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};

/// Records Events as one component (e.g. `kdfed-director`).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: String,
    instance: String,
}

impl Recorder {
    /// A recorder for `component`; the instance is the host name.
    pub fn new(client: Client, component: &str) -> Recorder {
        let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| component.to_string());
        Recorder { client, component: component.to_string(), instance }
    }

    /// Records an Event about `object`; a failure is logged and otherwise ignored, since
    /// Events never stop reconciliation.
    pub async fn publish<K>(&self, object: &K, warning: bool, reason: &str, message: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        if let Err(e) = self.record(object, warning, reason, message).await {
            tracing::warn!("cannot record event {reason}: {e}");
        }
    }

    /// Records an Event about `object`. Failures are returned for logging; they never stop
    /// reconciliation.
    pub async fn record<K>(&self, object: &K, warning: bool, reason: &str, message: &str) -> Result<(), kube::Error>
    where
        K: Resource<DynamicType = ()>,
    {
        let reference: ObjectReference = object.object_ref(&());
        let ns = object.namespace().unwrap_or_else(|| "default".to_string());
        let now = jiff::Timestamp::now();
        let name = format!("{}.{:x}", object.name_any(), now.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta { name: Some(name), namespace: Some(ns.clone()), ..ObjectMeta::default() },
            involved_object: reference,
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_string()),
            source: Some(EventSource { component: Some(self.component.clone()), host: None }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            action: Some(reason.to_string()),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &ns).create(&PostParams::default(), &event).await.map(|_| ())
    }
}

//! App catalog lookup, as upstream: `appCatalog: local` looks only in the cluster's
//! namespace, `system` only in the system namespace, unset tries local first.

use kdfed_crds::app::KubeDirectorApp;
use kdfed_crds::cluster::{APP_CATALOG_LOCAL, APP_CATALOG_SYSTEM};
use kube::Client;
use kube::api::Api;

/// The app and where it was found (`local` or `system`), or `None`.
pub async fn find_app(
    client: &Client,
    cluster_namespace: &str,
    system_namespace: &str,
    app: &str,
    app_catalog: Option<&str>,
) -> Result<Option<(KubeDirectorApp, String)>, kube::Error> {
    let local = Api::<KubeDirectorApp>::namespaced(client.clone(), cluster_namespace);
    let system = Api::<KubeDirectorApp>::namespaced(client.clone(), system_namespace);
    let found = match app_catalog {
        Some(APP_CATALOG_LOCAL) => local.get_opt(app).await?.map(|a| (a, APP_CATALOG_LOCAL)),
        Some(APP_CATALOG_SYSTEM) => system.get_opt(app).await?.map(|a| (a, APP_CATALOG_SYSTEM)),
        _ => match local.get_opt(app).await? {
            Some(a) => Some((a, APP_CATALOG_LOCAL)),
            None => system.get_opt(app).await?.map(|a| (a, APP_CATALOG_SYSTEM)),
        },
    };
    Ok(found.map(|(a, c)| (a, c.to_string())))
}

/// Every app a cluster with `app_catalog` can name, as [`find_app`] would find each (a local
/// app hides a system one of the same name): for the targets of a live upgrade.
pub async fn list_apps(
    client: &Client,
    cluster_namespace: &str,
    system_namespace: &str,
    app_catalog: Option<&str>,
) -> Result<Vec<KubeDirectorApp>, kube::Error> {
    let list = |ns: &str| {
        let api = Api::<KubeDirectorApp>::namespaced(client.clone(), ns);
        async move { api.list(&Default::default()).await.map(|l| l.items) }
    };
    let mut apps = match app_catalog {
        Some(APP_CATALOG_SYSTEM) => Vec::new(),
        _ => list(cluster_namespace).await?,
    };
    if app_catalog != Some(APP_CATALOG_LOCAL) {
        for app in list(system_namespace).await? {
            if !apps.iter().any(|a| a.metadata.name == app.metadata.name) {
                apps.push(app);
            }
        }
    }
    Ok(apps)
}

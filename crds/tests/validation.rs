//! Upstream KubeDirector's app and cluster rules, each error naming its field and rule.

use kdfed_crds::app::{KubeDirectorAppSpec, NodeRole, RoleService, Service, ServiceEndpoint};
use kdfed_crds::cluster::{
    KubeDirectorClusterSpec, KubeDirectorClusterStatus, MemberStatus, NotificationDesc, Placement, PlacementPreference,
    Role, RoleStatus,
};
use kdfed_crds::config::KubeDirectorConfigSpec;
use kdfed_crds::validate::{self, FieldError};

fn app() -> KubeDirectorAppSpec {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/apps/cassandra.yaml");
    let text = std::fs::read_to_string(path).expect("read");
    let app: kdfed_crds::KubeDirectorApp = serde_saphyr::from_str(&text).expect("parse");
    app.spec
}

fn cluster(roles: &[(&str, Option<i32>)]) -> KubeDirectorClusterSpec {
    KubeDirectorClusterSpec {
        app: "cassandra".into(),
        roles: roles.iter().map(|(id, m)| Role { id: (*id).into(), members: *m, ..Default::default() }).collect(),
        ..Default::default()
    }
}

fn errors_of(r: Result<(), validate::ValidationErrors>) -> Vec<FieldError> {
    r.err().map(|e| e.0).unwrap_or_default()
}

fn only(errors: &[FieldError], rule: &str) -> FieldError {
    let matching: Vec<&FieldError> = errors.iter().filter(|e| e.rule == rule).collect();
    assert_eq!(matching.len(), 1, "expected one {rule} error in {errors:#?}");
    matching[0].clone()
}

#[test]
fn duplicate_role_and_service_ids_are_rejected() {
    let mut a = app();
    a.roles.push(NodeRole { id: "seed".into(), cardinality: "1".into(), ..Default::default() });
    a.services.push(Service { id: "cql".into(), ..Default::default() });
    let errors = errors_of(validate::app(&a));
    let e = only(&errors, "unique-role-id");
    assert_eq!(e.path, "spec.roles[2].id");
    assert_eq!(e.message, "Each id in the roles array must be unique.");
    assert_eq!(only(&errors, "unique-service-id").path, "spec.services[2].id");
}

#[test]
fn unknown_role_and_service_ids_in_role_services_are_rejected() {
    let mut a = app();
    a.config
        .role_services
        .push(RoleService { role_id: "ghost".into(), service_ids: vec!["cql".into(), "nope".into()] });
    let errors = errors_of(validate::app(&a));
    let e = only(&errors, "known-role");
    assert_eq!(e.path, "spec.config.roleServices[2].roleID");
    assert_eq!(
        e.message,
        "Invalid roleID(ghost) in roleServices array in config section. Valid roles: \"seed,worker\""
    );
    let e = only(&errors, "known-service");
    assert_eq!(e.path, "spec.config.roleServices[2].serviceIDs[1]");
    assert!(e.message.starts_with("Invalid service_id(nope) in roleServices array"), "{}", e.message);
}

#[test]
fn unknown_selected_roles_are_rejected() {
    let mut a = app();
    a.config.selected_roles.push("ghost".into());
    let e = only(&errors_of(validate::app(&a)), "known-role");
    assert_eq!(e.path, "spec.config.selectedRoles[2]");
}

#[test]
fn dashboards_need_a_url_scheme() {
    let mut a = app();
    a.services.push(Service {
        id: "ui".into(),
        endpoint: Some(ServiceEndpoint { port: Some(80), is_dashboard: Some(true), ..Default::default() }),
        ..Default::default()
    });
    let e = only(&errors_of(validate::app(&a)), "dashboard-needs-url-scheme");
    assert_eq!(e.path, "spec.services[2].endpoint.urlScheme");
    assert_eq!(e.message, "The endpoint for service(ui) must include a urlScheme value because isDashboard is true.");
}

#[test]
fn malformed_cardinality_and_missing_image_are_rejected() {
    let mut a = app();
    a.default_image_repo_tag = None;
    a.roles[0].cardinality = "two".into();
    a.roles[0].image_repo_tag = Some("img".into());
    let errors = errors_of(validate::app(&a));
    assert_eq!(only(&errors, "cardinality-format").path, "spec.roles[0].cardinality");
    let e = only(&errors, "image-required");
    assert_eq!(e.message, "Role(worker) has no specified image, and no top-level default image is specified.");
}

#[test]
fn member_count_must_match_cardinality_in_upstream_words() {
    let a = app();
    let e = only(&errors_of(validate::cluster(&cluster(&[("seed", Some(1))]), "cassandra", &a)), "cardinality");
    assert_eq!(e.path, "spec.roles[0].members");
    assert_eq!(e.message, "Invalid member count for role(seed). Specified member count:1 Role cardinality:2+");
    assert!(e.to_string().starts_with("spec.roles[0].members: Invalid member count"), "{e}");
    assert!(e.to_string().ends_with("(rule: cardinality)"), "{e}");
    assert_eq!(validate::cluster(&cluster(&[("seed", Some(5))]), "cassandra", &a), Ok(()));
    assert_eq!(validate::cluster(&cluster(&[("seed", None)]), "cassandra", &a), Ok(()), "unset means the minimum");
}

#[test]
fn exact_cardinality_allows_only_that_count() {
    let mut a = app();
    a.roles[1].cardinality = "1".into();
    let e = only(
        &errors_of(validate::cluster(&cluster(&[("seed", Some(2)), ("worker", Some(2))]), "cassandra", &a)),
        "cardinality",
    );
    assert_eq!(e.message, "Invalid member count for role(worker). Specified member count:2 Role cardinality:1");
}

#[test]
fn at_most_a_thousand_members() {
    let a = app();
    let e = only(
        &errors_of(validate::cluster(&cluster(&[("seed", Some(600)), ("worker", Some(401))]), "cassandra", &a)),
        "max-members",
    );
    assert_eq!(e.message, "Maximum number of total members per KD cluster supported is 1000.");
    assert_eq!(validate::cluster(&cluster(&[("seed", Some(600)), ("worker", Some(400))]), "cassandra", &a), Ok(()));
}

#[test]
fn selected_roles_with_minimum_members_are_required() {
    let a = app();
    let e = only(
        &errors_of(validate::cluster(&cluster(&[("worker", Some(1))]), "cassandra", &a)),
        "selected-role-required",
    );
    assert_eq!(
        e.message,
        "Active role(seed) in app(cassandra) must have its configuration included in the roles array."
    );
    // worker is 0+, so leaving it out is fine.
    assert_eq!(validate::cluster(&cluster(&[("seed", Some(2))]), "cassandra", &a), Ok(()));
}

#[test]
fn unknown_and_duplicate_cluster_roles_are_rejected() {
    let a = app();
    let errors = errors_of(validate::cluster(
        &cluster(&[("seed", Some(2)), ("ghost", Some(1)), ("seed", Some(2))]),
        "cassandra",
        &a,
    ));
    let e = only(&errors, "known-role");
    assert_eq!(e.message, "Invalid role(ghost) in app(cassandra) specified. Valid roles: \"seed,worker\"");
    assert_eq!(only(&errors, "unique-role-id").path, "spec.roles[2].id");
}

#[test]
fn labels_storage_and_placement_are_checked() {
    let a = app();
    let mut c = cluster(&[("seed", Some(2))]);
    c.roles[0].pod_labels = Some([("bad key!".to_string(), "v".to_string())].into());
    c.roles[0].storage = Some(kdfed_crds::cluster::ClusterStorage { size: "0".into(), storage_class_name: None });
    c.placement = Some(Placement {
        preferences: vec![PlacementPreference { weight: 0, preference: Default::default() }],
        ..Default::default()
    });
    let errors = errors_of(validate::cluster(&c, "cassandra", &a));
    assert_eq!(only(&errors, "label-key").path, "spec.roles[0].podLabels[bad key!]");
    assert_eq!(only(&errors, "positive").message, "Storage size for role (seed) should be greater than zero.");
    assert_eq!(only(&errors, "weight-range").path, "spec.placement.preferences[0].weight");
}

#[test]
fn resources_below_the_app_minimum_are_rejected() {
    let a = app();
    let mut c = cluster(&[("seed", Some(2))]);
    c.roles[0].resources.requests =
        Some([("memory".to_string(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".into()))].into());
    let e = only(&errors_of(validate::cluster(&c, "cassandra", &a)), "min-resources");
    assert_eq!(
        e.message,
        "Specified resource(\"memory\") value(\"1Gi\") for role(\"seed\") is invalid. Minimum value must be \"4Gi\"."
    );
}

fn status_with_members(role: &str, pending: bool) -> KubeDirectorClusterStatus {
    KubeDirectorClusterStatus {
        state: Some("configured".into()),
        roles: vec![RoleStatus {
            id: role.into(),
            members: vec![MemberStatus {
                pod: "p".into(),
                state: "configured".into(),
                state_detail: kdfed_crds::cluster::MemberStateDetail {
                    pending_notify_cmds: if pending {
                        vec![NotificationDesc { arguments: vec!["--addnodes".into()] }]
                    } else {
                        vec![]
                    },
                    ..Default::default()
                },
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn app_is_immutable() {
    let old = cluster(&[("seed", Some(2))]);
    let mut new = old.clone();
    new.app = "spark".into();
    let e =
        only(&errors_of(validate::cluster_update(&old, &new, Some(&status_with_members("seed", false)))), "immutable");
    assert_eq!((e.path.as_str(), e.message.as_str()), ("spec.app", "The app property is read-only."));
}

#[test]
fn only_members_may_change_while_a_role_has_members() {
    let old = cluster(&[("seed", Some(2))]);
    let status = status_with_members("seed", false);
    let mut grow = old.clone();
    grow.roles[0].members = Some(3);
    assert_eq!(validate::cluster_update(&old, &grow, Some(&status)), Ok(()));
    let mut relabel = old.clone();
    relabel.roles[0].pod_labels = Some([("a".to_string(), "b".to_string())].into());
    let e =
        only(&errors_of(validate::cluster_update(&old, &relabel, Some(&status))), "role-immutable-while-members-exist");
    assert_eq!(
        e.message,
        "Role(seed) properties other than the members count cannot be modified while role members exist."
    );
    // Without members the role may change freely.
    assert_eq!(validate::cluster_update(&old, &relabel, Some(&status_with_members("worker", false))), Ok(()));
}

#[test]
fn spec_changes_wait_for_the_previous_one_and_for_notifications() {
    let old = cluster(&[("seed", Some(2))]);
    let mut grow = old.clone();
    grow.roles[0].members = Some(3);
    let e = only(
        &errors_of(validate::cluster_update(&old, &grow, Some(&status_with_members("seed", true)))),
        "pending-notifications",
    );
    assert_eq!(
        e.message,
        "Change to spec not allowed because some members have not processed notifications of previous change."
    );
    let mut modified = status_with_members("seed", false);
    modified.state = Some(validate::STATE_SPEC_MODIFIED.into());
    only(&errors_of(validate::cluster_update(&old, &grow, Some(&modified))), "one-change-at-a-time");
    // Metadata-only updates (same spec) are always fine.
    assert_eq!(validate::cluster_update(&old, &old, Some(&modified)), Ok(()));
}

#[test]
fn config_values_are_checked() {
    let c = KubeDirectorConfigSpec {
        default_service_type: Some("Ingress".into()),
        default_naming_scheme: Some("Random".into()),
        master_encryption_key: Some("abc".into()),
        ..Default::default()
    };
    let errors = errors_of(validate::config(&c));
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_eq!(only(&errors, "aes-key").path, "spec.masterEncryptionKey");
    let ok = KubeDirectorConfigSpec { master_encryption_key: Some("00".repeat(32)), ..Default::default() };
    assert_eq!(validate::config(&ok), Ok(()));
}

/// A cluster of the Cassandra example whose first role carries `role` (JSON) on top of
/// `{"id": "seed", "members": 2}`, and the rest of the spec `extra`.
fn cluster_with(role: serde_json::Value, extra: serde_json::Value) -> KubeDirectorClusterSpec {
    let mut seed = serde_json::json!({"id": "seed", "members": 2});
    if let (Some(seed), Some(more)) = (seed.as_object_mut(), role.as_object()) {
        seed.extend(more.clone());
    }
    let mut spec = serde_json::json!({"app": "cassandra", "roles": [seed]});
    if let (Some(spec), Some(more)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(more.clone());
    }
    serde_json::from_value(spec).expect("cluster spec")
}

fn cluster_errors(role: serde_json::Value, extra: serde_json::Value) -> Vec<FieldError> {
    errors_of(validate::cluster(&cluster_with(role, extra), "cassandra", &app()))
}

#[test]
fn negative_and_unknown_quantities_are_refused_where_they_are_written() {
    let errors = cluster_errors(
        serde_json::json!({"resources": {
            "requests": {"cpu": "abc", "memory": "8Gi", "foo": "1"},
            "limits": {"memory": "-5Gi", "nvidia.com/gpu": "1"}
        }}),
        serde_json::json!({}),
    );
    let e = only(&errors, "non-negative");
    assert_eq!(e.path, "spec.roles[0].resources.limits[memory]");
    assert_eq!(e.message, "Invalid value: \"-5Gi\": must be greater than or equal to 0");
    assert!(e.to_string().ends_with("(rule: non-negative)"), "{e}");
    assert_eq!(only(&errors, "quantity").path, "spec.roles[0].resources.requests[cpu]");
    let e = only(&errors, "resource-name");
    assert_eq!(e.path, "spec.roles[0].resources.requests[foo]");
    assert!(e.message.contains("must be a standard resource for containers"), "{}", e.message);
    // -5Gi is below 8Gi, but that is the negative limit's error, not a second one.
    assert!(!errors.iter().any(|e| e.rule == "requests-within-limits"), "{errors:#?}");

    let errors = cluster_errors(
        serde_json::json!({"resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "1500m"}}}),
        serde_json::json!({}),
    );
    let e = only(&errors, "requests-within-limits");
    assert_eq!(e.path, "spec.roles[0].resources.requests[cpu]");
    assert_eq!(e.message, "Invalid value: \"2\": must be less than or equal to cpu limit of 1500m");

    let fine = cluster_with(
        serde_json::json!({"resources": {
            "requests": {"cpu": "1", "memory": "4Gi", "hugepages-2Mi": "0"},
            "limits": {"cpu": "1500m", "memory": "4Gi", "nvidia.com/gpu": "1", "ephemeral-storage": "1e9"}
        }}),
        serde_json::json!({}),
    );
    assert_eq!(validate::cluster(&fine, "cassandra", &app()), Ok(()));
}

#[test]
fn negative_minimum_resources_of_an_app_are_refused() {
    let mut a = app();
    a.roles[0].min_resources =
        Some([("memory".to_string(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("-1Gi".into()))].into());
    let e = only(&errors_of(validate::app(&a)), "non-negative");
    assert_eq!(e.path, "spec.roles[0].minResources[memory]");
}

#[test]
fn storage_classes_and_referenced_names_are_dns_subdomains() {
    let errors = cluster_errors(
        serde_json::json!({
            "storage": {"size": "1Gi", "storageClassName": "Fast_SSD"},
            "blockStorage": {"storageClassName": "block.example", "size": "-1Gi"},
            "secret": {"name": "creds!", "mountPath": "/etc/creds"},
            "volumeProjections": [{"pvcName": "shared", "mountPath": "/shared"}],
        }),
        serde_json::json!({"connections": {"clusters": ["db"], "configmaps": ["Settings"], "secrets": []}}),
    );
    let subdomains: Vec<&str> = errors.iter().filter(|e| e.rule == "dns-subdomain").map(|e| e.path.as_str()).collect();
    assert_eq!(
        subdomains,
        ["spec.roles[0].storage.storageClassName", "spec.roles[0].secret.name", "spec.connections.configmaps[0]"]
    );
    let e = errors.iter().find(|e| e.path == "spec.roles[0].storage.storageClassName").expect("class error");
    assert!(e.message.starts_with("StorageClass name(Fast_SSD) must be a DNS subdomain"), "{}", e.message);
    assert_eq!(only(&errors, "positive").path, "spec.roles[0].blockStorage.size");

    let fine = cluster_with(
        serde_json::json!({"storage": {"size": "1Gi", "storageClassName": "fast-ssd.example.com"}}),
        serde_json::json!({"defaultSecret": {"name": "shared-creds", "mountPath": "/etc/shared"}}),
    );
    assert_eq!(validate::cluster(&fine, "cassandra", &app()), Ok(()));
}

#[test]
fn annotation_keys_and_environment_names_are_checked() {
    let errors = cluster_errors(
        serde_json::json!({
            "podAnnotations": {"example.com/ok": "any value at all", "bad key": "v"},
            "serviceAnnotations": {"-leading": "v"},
            "env": [{"name": "GOOD_NAME", "value": "1"}, {"name": "A=B", "value": "2"}, {"name": "", "value": "3"}],
        }),
        serde_json::json!({}),
    );
    let keys: Vec<&str> = errors.iter().filter(|e| e.rule == "annotation-key").map(|e| e.path.as_str()).collect();
    assert_eq!(keys, ["spec.roles[0].podAnnotations[bad key]", "spec.roles[0].serviceAnnotations[-leading]"]);
    let env: Vec<&str> = errors.iter().filter(|e| e.rule == "env-name").map(|e| e.path.as_str()).collect();
    assert_eq!(env, ["spec.roles[0].env[1].name", "spec.roles[0].env[2].name"]);
}

#[test]
fn setup_package_urls_follow_upstreams_crd_pattern() {
    for good in ["file:///opt/pkg.tgz", "http://10.0.0.1:8080/a/b.tgz", "https://example.invalid/setup-1.0.tgz"] {
        assert!(validate::is_package_url(good), "{good}");
    }
    for bad in ["ftp://example.invalid/a.tgz", "https://example.invalid/a.zip", "https://.tgz", "/opt/pkg.tgz", "x"] {
        assert!(!validate::is_package_url(bad), "{bad}");
    }
    // A bad default is reported once, at the default, also after defaulting copied it.
    let mut a = app();
    a.default_config_package = Some(Some(kdfed_crds::app::SetupPackageUrl {
        package_url: "ftp://example.invalid/setup.tgz".into(),
        ..Default::default()
    }));
    kdfed_crds::defaults::app(&mut a);
    let e = only(&errors_of(validate::app(&a)), "package-url");
    assert_eq!(e.path, "spec.defaultConfigPackage.packageURL");
    assert!(e.message.contains("^(file|https?)://.+\\.tgz$"), "{}", e.message);
    // A role's own package is checked at the role.
    let mut a = app();
    a.roles[1].config_package =
        Some(Some(kdfed_crds::app::SetupPackageUrl { package_url: "setup.tgz".into(), ..Default::default() }));
    assert_eq!(only(&errors_of(validate::app(&a)), "package-url").path, "spec.roles[1].configPackage.packageURL");
}

#[test]
fn persist_dirs_are_absolute_and_not_the_root() {
    let mut a = app();
    a.default_persist_dirs = Some(vec!["/var/lib/cassandra".into(), "/".into()]);
    a.roles[1].persist_dirs = Some(vec!["data".into(), "/data/".into(), "/data".into()]);
    kdfed_crds::defaults::app(&mut a);
    let errors = errors_of(validate::app(&a));
    let paths: Vec<&str> = errors.iter().filter(|e| e.rule == "persist-dir").map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["spec.defaultPersistDirs[1]", "spec.roles[1].persistDirs[0]", "spec.roles[1].persistDirs[1]"]);
    let e = errors.iter().find(|e| e.path == "spec.defaultPersistDirs[1]").expect("root error");
    assert_eq!(
        e.message,
        "persistDir(/) must be an absolute path other than / and must not end with / (pattern ^/.*[^/]$)."
    );
}

#[test]
fn version_is_required_and_bounded() {
    let mut a = app();
    a.version = "v".repeat(100_000);
    let e = only(&errors_of(validate::app(&a)), "max-length");
    assert_eq!(e.path, "spec.version");
    assert_eq!(e.message, "version must be at most 256 characters (it has 100000).");
    a.version = "v".repeat(validate::MAX_VERSION_LENGTH);
    assert_eq!(validate::app(&a), Ok(()));
    a.version = String::new();
    assert_eq!(only(&errors_of(validate::app(&a)), "required").path, "spec.version");
}

#[test]
fn role_ids_take_upstreams_form_with_capitals_underscores_and_dots() {
    // Real role ids from upstream's example catalog and what the pattern allows besides.
    for id in ["vanilla_centos", "LoadBalancer", "RESTServer", "a", "spark.worker-2", &"R".repeat(63)] {
        assert!(validate::is_role_id(id), "{id} is a role id upstream accepts");
        let mut a = app();
        let old = a.roles[0].id.clone();
        a.roles[0].id = id.to_string();
        for rs in &mut a.config.role_services {
            if rs.role_id == old {
                rs.role_id = id.to_string();
            }
        }
        for sel in &mut a.config.selected_roles {
            if *sel == old {
                *sel = id.to_string();
            }
        }
        assert_eq!(validate::app(&a), Ok(()), "{id}");
    }
    // Refused, as upstream's CRD pattern (and length bound) refuses them.
    for id in ["", "_lead", "trail.", "-x", "has space", "ünicode", &"R".repeat(64)] {
        assert!(!validate::is_role_id(id), "{id:?} is not a role id");
        let mut a = app();
        a.roles[0].id = id.to_string();
        let e = only(&errors_of(validate::app(&a)), "role-id-format");
        assert_eq!(e.path, "spec.roles[0].id");
        assert!(e.message.contains("pattern ^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"), "{}", e.message);
    }
}

#[test]
fn a_cluster_of_an_app_with_upstream_role_ids_validates() {
    let mut a = app();
    a.roles[0].id = "vanilla_centos".into();
    a.roles[1].id = "RESTServer".into();
    a.config.role_services[0].role_id = "vanilla_centos".into();
    a.config.role_services[1].role_id = "RESTServer".into();
    a.config.selected_roles = vec!["vanilla_centos".into(), "RESTServer".into()];
    assert_eq!(validate::app(&a), Ok(()));
    let c = KubeDirectorClusterSpec {
        app: "cassandra".into(),
        ..cluster(&[("vanilla_centos", Some(2)), ("RESTServer", Some(1))])
    };
    assert_eq!(validate::cluster(&c, "cassandra", &a), Ok(()));
    // Role ids are case-sensitive, as upstream's comparisons are.
    let c = cluster(&[("Vanilla_Centos", Some(2))]);
    assert_eq!(only(&errors_of(validate::cluster(&c, "cassandra", &a)), "known-role").path, "spec.roles[0].id");
}

#[test]
fn service_ids_are_dns_labels_of_at_most_15_characters_as_upstream() {
    let mut a = app();
    a.services[0].id = "a".repeat(15);
    a.config
        .role_services
        .iter_mut()
        .flat_map(|rs| rs.service_ids.iter_mut())
        .filter(|s| *s == "cql")
        .for_each(|s| *s = "a".repeat(15));
    assert_eq!(validate::app(&a), Ok(()));
    for id in ["a".repeat(16), "Upper".into(), "under_score".into()] {
        let mut a = app();
        a.services[0].id = id.clone();
        let e = only(&errors_of(validate::app(&a)), "service-id-format");
        assert_eq!(e.path, "spec.services[0].id", "{id}");
        assert!(e.message.contains("at most 15 characters"), "{}", e.message);
    }
}

#[test]
fn upstreams_crd_rules_hold_offline_too() {
    let mut a = app();
    a.config_schema_version = 6;
    a.distro_id = String::new();
    a.logo_url = Some("https://example.invalid/logo.gif".into());
    a.capabilities = vec![String::new()];
    let errors = errors_of(validate::app(&a));
    let e = only(&errors, "min");
    assert_eq!(
        (e.path.as_str(), e.message.as_str()),
        ("spec.configSchemaVersion", "configSchemaVersion(6) must be at least 7.")
    );
    assert_eq!(only(&errors, "logo-url").path, "spec.logoURL");
    let required: Vec<&str> = errors.iter().filter(|e| e.rule == "required").map(|e| e.path.as_str()).collect();
    assert_eq!(required, vec!["spec.distroID", "spec.capabilities[0]"]);
    for ok in ["file:///logo.png", "http://x/l.jpeg", "https://x/l.png"] {
        assert!(validate::is_logo_url(ok), "{ok}");
    }
    for bad in ["ftp://x/l.png", "https://x/l.svg", "https://.png"] {
        assert!(!validate::is_logo_url(bad), "{bad}");
    }

    let mut c = cluster(&[("seed", Some(2))]);
    c.default_secret = Some(kdfed_crds::cluster::KdSecret {
        name: "s".into(),
        mount_path: "etc/secret".into(),
        default_mode: Some(512),
        ..Default::default()
    });
    c.roles[0].file_injections = vec![kdfed_crds::cluster::FileInjection {
        src_url: "ftp://x/f".into(),
        dest_dir: "/etc".into(),
        permissions: None,
    }];
    let errors = errors_of(validate::cluster(&c, "cassandra", &app()));
    assert_eq!(only(&errors, "absolute-path").path, "spec.defaultSecret.mountPath");
    let e = only(&errors, "file-mode");
    assert_eq!(
        (e.path.as_str(), e.message.as_str()),
        ("spec.defaultSecret.defaultMode", "defaultMode(512) must be between 0 and 511 (0777).")
    );
    assert_eq!(only(&errors, "src-url").path, "spec.roles[0].fileInjections[0].srcURL");

    assert!(validate::app_name(&"a".repeat(63)).is_ok());
    assert_eq!(only(&errors_of(validate::app_name(&"a".repeat(64))), "max-length").path, "metadata.name");
    assert!(validate::config_name("kd-global-config").is_ok());
    assert_eq!(only(&errors_of(validate::config_name("other")), "config-name").path, "metadata.name");
}

#[test]
fn service_ids_that_cannot_name_a_container_port_are_refused_with_the_reason() {
    for id in ["8080", "a--b"] {
        let mut a = app();
        a.services[0].id = id.into();
        a.config
            .role_services
            .iter_mut()
            .flat_map(|rs| rs.service_ids.iter_mut())
            .filter(|s| *s == "cql")
            .for_each(|s| *s = id.into());
        let e = only(&errors_of(validate::app(&a)), "service-id-port-name");
        assert_eq!(e.path, "spec.services[0].id", "{id}");
        assert!(e.message.contains("port names (IANA service names)"), "{}", e.message);
    }
}

#[test]
fn distro_id_is_bounded_and_config_schema_version_is_at_least_upstream_s_minimum() {
    let mut a = app();
    a.distro_id = "d".repeat(257);
    a.config_schema_version = 6;
    let errors = errors_of(validate::app(&a));
    assert_eq!(only(&errors, "max-length").path, "spec.distroID");
    let e = only(&errors, "min");
    assert_eq!(e.path, "spec.configSchemaVersion");
    assert!(e.message.contains("at least 7"), "{}", e.message);
    a.distro_id = String::new();
    a.config_schema_version = 7;
    let errors = errors_of(validate::app(&a));
    assert_eq!(only(&errors, "required").path, "spec.distroID");
}

#[test]
fn two_services_of_one_role_may_not_share_a_port() {
    let mut a = app();
    let role = a.config.role_services[0].role_id.clone();
    let first = a.services[0].clone();
    let mut twin = first.clone();
    twin.id = "twin".into();
    a.services.push(twin);
    a.config.role_services[0].service_ids = vec![first.id.clone(), "twin".into()];
    let errors = errors_of(validate::app(&a));
    let e = only(&errors, "unique-port");
    assert_eq!(e.path, "spec.config.roleServices[0].serviceIDs[1]");
    assert!(e.message.contains(&format!("of role {role} both use port")), "{}", e.message);
}

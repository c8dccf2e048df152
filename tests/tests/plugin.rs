//! The CLI as kubectl's plugin (`kubectl kdfed ...` through the test bed's real kubectl,
//! with kubectl's --kubeconfig, --context and -n), the list commands' output formats
//! (`-o wide|json|yaml|name`, names) and `kdfed cluster list --watch`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kdfed_crds::KubeDirectorCluster;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use support::cli::{MEMBERS, cli_bed, create_cluster, ok_stdout};

/// A kubeconfig whose current context points nowhere, beside the test bed's context (whose
/// name it returns): only `--context` makes the plugin reach the hub.
fn two_contexts(bed: &support::cli::CliBed) -> (std::path::PathBuf, String) {
    let mut kc = kube::config::Kubeconfig::read_from(&bed.kubeconfig).expect("kubeconfig");
    let good = kc.current_context.clone().expect("current context");
    let mut cluster = kc.clusters[0].clone();
    cluster.name = "nowhere".into();
    if let Some(c) = cluster.cluster.as_mut() {
        c.server = Some("https://127.0.0.1:9".into());
    }
    kc.clusters.push(cluster);
    let mut context = kc.contexts.iter().find(|c| c.name == good).expect("context").clone();
    context.name = "nowhere".into();
    if let Some(c) = context.context.as_mut() {
        c.cluster = "nowhere".into();
    }
    kc.contexts.push(context);
    kc.current_context = Some("nowhere".into());
    let path = bed.tmp.path().join("two-contexts.kubeconfig");
    std::fs::write(&path, serde_saphyr::to_string(&kc).expect("yaml")).expect("write kubeconfig");
    (path, good)
}

#[tokio::test]
async fn kdfed_runs_as_a_kubectl_plugin_with_kubectl_s_flags() {
    let bed = cli_bed().await;
    let kubectl = kdfed_testbed::rbac::kubectl().expect("kubectl");
    let path = bed.path_with(&bed.plugin_dir());
    let (kubeconfig, good) = two_contexts(&bed);
    let kc = kubeconfig.to_str().expect("path");
    let plugin = |args: &[&str], env_kubeconfig: Option<&str>| {
        let mut cmd = Command::new(&kubectl);
        cmd.arg("kdfed").args(args).env("PATH", &path).env_remove("KUBECONFIG");
        if let Some(k) = env_kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        cmd.output().expect("kubectl kdfed")
    };

    // kubectl finds the plugin on PATH and passes the flags after its name through.
    let out = ok_stdout(
        "kubectl kdfed member list",
        &plugin(&["member", "list", "--kubeconfig", kc, "--context", &good], None),
    );
    for m in MEMBERS {
        assert!(out.lines().any(|l| l.starts_with(m)), "{m} missing:\n{out}");
    }
    // The current context (nowhere) is used without --context: the plugin really reads it.
    let out = plugin(&["member", "list", "--kubeconfig", kc], None);
    assert!(!out.status.success(), "the context pointing nowhere answered: {}", String::from_utf8_lossy(&out.stdout));
    // $KUBECONFIG, --context and -n, as kubectl reads them.
    let out = ok_stdout(
        "cluster list -n",
        &plugin(&["cluster", "list", "--context", &good, "-n", "other", "-o", "name"], Some(kc)),
    );
    assert_eq!(out, "kubedirectorcluster.kubedirector.hpe.com/gamma\n");
    let out =
        ok_stdout("--namespace=", &plugin(&["cluster", "list", "--context", &good, "--namespace=default"], Some(kc)));
    assert!(out.contains("alpha") && out.contains("beta") && !out.contains("gamma"), "{out}");
    // An unknown context is named.
    let out = plugin(&["member", "list", "--context", "missing"], Some(kc));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--context \"missing\"") && err.contains(&good), "{err}");
    // Help and usage speak of `kubectl kdfed`.
    let out = ok_stdout("kubectl kdfed --help", &plugin(&["--help"], None));
    assert!(out.contains("Usage: kubectl kdfed"), "{out}");
    let out = plugin(&["member", "lst"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("kubectl kdfed member"), "{out:?}");
}

#[tokio::test]
async fn every_list_command_prints_wide_json_yaml_and_names() {
    let bed = cli_bed().await;
    for (command, kind, names) in [
        (["member", "list"], "kubedirectormember.federation.kubedirector.hpe.com", vec!["east", "north", "west"]),
        (["cluster", "list"], "kubedirectorcluster.kubedirector.hpe.com", vec!["alpha", "beta", "gamma"]),
        (["catalog", "list"], "kubedirectorapp.kubedirector.hpe.com", vec!["spark-lite"]),
    ] {
        let what = command.join(" ");
        let run = |extra: &[&str]| {
            let mut args = command.to_vec();
            args.extend(extra);
            ok_stdout(&format!("{what} {extra:?}"), &bed.kdfed(&args))
        };
        let table = run(&[]);
        let wide = run(&["-o", "wide"]);
        let header = |t: &str| t.lines().next().unwrap_or("").split_whitespace().count();
        assert!(header(&wide) > header(&table), "{what}: -o wide has no more columns:\n{table}\n{wide}");
        assert!(wide.lines().next().unwrap_or("").ends_with("AGE"), "{what}: {wide}");
        let json: Value = serde_json::from_str(&run(&["-o", "json"])).expect("-o json is JSON");
        let yaml: Value = serde_saphyr::from_str(&run(&["-o", "yaml"])).expect("-o yaml is YAML");
        for list in [&json, &yaml] {
            assert_eq!(list["kind"], "List", "{what}");
            let got: Vec<&str> = list["items"]
                .as_array()
                .expect("items")
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str())
                .collect();
            assert_eq!(got, names, "{what}");
            assert!(list["items"][0]["metadata"]["managedFields"].is_null(), "{what}: managedFields shown");
        }
        let expected: String = names.iter().map(|n| format!("{kind}/{n}\n")).collect();
        assert_eq!(run(&["-o", "name"]), expected, "{what}");
        // Names narrow the list, in every format.
        assert_eq!(run(&["-o", "name", names[0]]), format!("{kind}/{}\n", names[0]), "{what}");
        let out = bed.kdfed(&[command[0], command[1], "no-such-one"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("\"no-such-one\" not found"), "{what}: {err}");
        // A bad format names the flag and the formats there are.
        let out = bed.kdfed(&[command[0], command[1], "-o", "xml"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains("'xml' for '--output <FORMAT>'")
                && err.contains("wide, json, yaml, name"),
            "{what}: {err}"
        );
    }
}

/// Reads lines of a child's stdout on a thread, so that a test can wait for one with a
/// deadline.
fn lines_of(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line for which `want` holds, within 30 s; every line read is added to `seen`.
fn wait_line(rx: &std::sync::mpsc::Receiver<String>, seen: &mut Vec<String>, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if want(&line) {
                    return line;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no such line within 30 s; the watch printed:\n{}", seen.join("\n"));
}

#[tokio::test]
async fn cluster_list_watch_prints_changed_rows() {
    let bed = cli_bed().await;
    let mut child = Command::new(&bed.kdfed)
        .args(["cluster", "list", "--watch", "-n", "default", "--kubeconfig"])
        .arg(&bed.kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kdfed cluster list --watch");
    let rx = lines_of(child.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    wait_line(&rx, &mut seen, |l| l.starts_with("NAMESPACE"));
    wait_line(&rx, &mut seen, |l| l.contains("beta"));
    // Let the watch start (its first list prints nothing new), then change a cluster's status.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let api: Api<KubeDirectorCluster> = Api::namespaced(bed.client.clone(), "default");
    let status =
        json!({"status": {"state": "configured", "membersReady": "2/2", "placement": {"member": "east", "epoch": 1}}});
    api.patch_status("alpha", &PatchParams::default(), &Patch::Merge(&status)).await.expect("status");
    let row = wait_line(&rx, &mut seen, |l| l.contains("alpha"));
    assert!(row.contains("configured") && row.contains("east") && row.contains("2/2"), "{row}");
    // A new cluster shows up, one in another namespace does not, a deleted one says so.
    create_cluster(&bed.client, "other", "hidden").await;
    create_cluster(&bed.client, "default", "delta").await;
    wait_line(&rx, &mut seen, |l| l.contains("delta"));
    api.delete("beta", &Default::default()).await.expect("delete");
    let row = wait_line(&rx, &mut seen, |l| l.contains("beta"));
    assert!(row.contains("Deleted"), "{row}");
    assert!(!seen.iter().any(|l| l.contains("hidden")), "{seen:?}");
    // Unchanged clusters were printed once only.
    assert_eq!(seen.iter().filter(|l| l.contains("alpha")).count(), 2, "{seen:?}");
    let _ = child.kill();
    let _ = child.wait();
}

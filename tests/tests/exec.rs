//! Exec on the test bed runs for real: a command exec'd into a fake pod runs on the host with
//! the pod's own directory overlaid on the container paths, its output and exit status come
//! back through the API server, arguments carry data, background processes outlive the exec, and
//! a recreated pod starts from an empty filesystem.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kdfed_testbed::Testbed;
use kube::api::{Api, AttachParams, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::io::AsyncReadExt;

const TIMEOUT: Duration = Duration::from_secs(60);

async fn running_pod(pods: &Api<Pod>, name: &str) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("create pod");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let pod = pods.get(name).await.expect("get pod");
        if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
            return pod;
        }
        assert!(tokio::time::Instant::now() < deadline, "pod {name} not running");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `sh -c script [arg]` in the pod's `app` container; returns stdout,
/// stderr and the exit status. Retries while KWOK has not seen the pod's `Exec` yet.
async fn exec(pods: &Api<Pod>, pod: &str, script: &str, arg: Option<&str>) -> (String, String, i32) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let params = AttachParams::default().container("app").stdin(false).stdout(true).stderr(true);
        let mut command = vec!["sh", "-c", script];
        command.extend(arg);
        let attempt = pods.exec(pod, command, &params).await;
        match attempt {
            Ok(mut process) => {
                let (mut out, mut err) = (String::new(), String::new());
                let mut stdout = process.stdout().expect("stdout");
                let mut stderr = process.stderr().expect("stderr");
                let status = process.take_status().expect("status");
                let (a, b) = tokio::join!(stdout.read_to_string(&mut out), stderr.read_to_string(&mut err));
                a.expect("read stdout");
                b.expect("read stderr");
                let status = status.await;
                process.join().await.expect("join");
                let code = exit_code(status);
                if code == -1 && err.contains("exec target not found") && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                return (out, err, code);
            }
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "exec into {pod} failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The exit status: `Success`, a kubelet's `ExitCode` cause, or, from KWOK (which reports a
/// failed command as an internal error), the `exit status N` at the end of the message.
fn exit_code(status: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>) -> i32 {
    let Some(status) = status else { return -2 };
    if status.status.as_deref() == Some("Success") {
        return 0;
    }
    let causes = status.details.and_then(|d| d.causes).unwrap_or_default();
    if let Some(code) = causes
        .iter()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message.as_deref())
        .and_then(|m| m.parse().ok())
    {
        return code;
    }
    status
        .message
        .as_deref()
        .and_then(|m| m.rsplit_once("exit status "))
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or(-1)
}

#[tokio::test]
async fn exec_runs_commands_in_the_fake_pods_own_filesystem() {
    let bed = Testbed::start(&["east"]).await.expect("test bed");
    let client: Client = bed.client("east").await.expect("client");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = running_pod(&pods, "exec-a").await;
    let uid = pod.uid().expect("uid");
    let fs = bed.cluster("east").pod_filesystem("default", "exec-a", &uid);

    let (out, err, code) =
        exec(&pods, "exec-a", "mkdir -p /etc/guestconfig && echo hello > /etc/guestconfig/x && cat /etc/guestconfig/x && echo oops >&2 && exit 3", None)
            .await;
    assert_eq!((out.as_str(), err.as_str(), code), ("hello\n", "oops\n", 3));
    assert_eq!(std::fs::read_to_string(fs.join("etc/guestconfig/x")).expect("pod file"), "hello\n");
    assert!(!std::path::Path::new("/etc/guestconfig/x").exists(), "the host's /etc is untouched");

    // KWOK never closes a command's stdin (it copies the stream into the pipe and leaves it
    // open), so data goes in as arguments instead.
    let (_, _, code) = exec(
        &pods,
        "exec-a",
        "mkdir -p /opt/guestconfig && printf %s \"$0\" > /opt/guestconfig/in",
        Some("{\"a\": 1}"),
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(std::fs::read_to_string(fs.join("opt/guestconfig/in")).expect("stdin file"), "{\"a\": 1}");

    // A background process outlives the exec and still sees the pod's filesystem.
    let (_, _, code) = exec(
        &pods,
        "exec-a",
        "nohup sh -c 'sleep 1; cat /opt/guestconfig/in > /opt/guestconfig/later' >/dev/null 2>&1 </dev/null &",
        None,
    )
    .await;
    assert_eq!(code, 0);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !fs.join("opt/guestconfig/later").exists() {
        assert!(tokio::time::Instant::now() < deadline, "background process did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every exec shares the pod's one mount namespace, as in a container: a background
    // process sees a file a later exec writes (with the test bed's helper, as kubectl exec).
    let (_, _, code) = exec(
        &pods,
        "exec-a",
        "nohup sh -c 'for i in $(seq 1200); do [ -f /usr/local/bin/tool ] && break; sleep 0.1; done; /usr/local/bin/tool > /opt/guestconfig/tool-out' >/dev/null 2>&1 </dev/null &",
        None,
    )
    .await;
    assert_eq!(code, 0);
    kdfed_testbed::exec::write_pod_file(
        &client,
        "default",
        "exec-a",
        "/usr/local/bin/tool",
        "#!/bin/sh\necho tool ran\n",
        0o755,
    )
    .await
    .expect("write a file through exec");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while std::fs::read_to_string(fs.join("opt/guestconfig/tool-out")).ok().as_deref() != Some("tool ran\n") {
        assert!(tokio::time::Instant::now() < deadline, "the background process did not see the new file");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (out, _, _) = exec(&pods, "exec-a", "ls /usr/local/bin/tool", None).await;
    assert_eq!(out, "/usr/local/bin/tool\n");

    // A recreated pod gets a new, empty filesystem.
    pods.delete("exec-a", &DeleteParams::default().grace_period(0)).await.expect("delete");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while pods.get_opt("exec-a").await.expect("get").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "pod not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running_pod(&pods, "exec-a").await;
    let (out, _, code) = exec(&pods, "exec-a", "cat /etc/guestconfig/x 2>/dev/null || echo absent", None).await;
    assert_eq!((out.as_str(), code), ("absent\n", 0));
}

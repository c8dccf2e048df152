//! Shell completions and man pages generated from the CLI's definition: the bash script,
//! sourced in a real bash, completes commands and flags, and member, cluster and app names
//! from a test-bed hub; so does the zsh script in a real zsh (with the completion
//! system's `compadd` and `compdef` stood in for); fish scripts and man pages are generated.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::cli::{CliBed, cli_bed, ok_stdout};

/// Completes `words` (the last one being completed) in bash with the generated script, with
/// `kubeconfig` as $KUBECONFIG; returns COMPREPLY.
fn complete(bed: &CliBed, script: &Path, kubeconfig: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        r#"source '{}'
COMP_WORDS=({})
COMP_CWORD={}
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
_kdfed_names kdfed "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        script.display(),
        quoted.join(" "),
        words.len() - 1
    );
    let bin = bed.kdfed.parent().expect("bin dir");
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .env("PATH", bed.path_with(bin))
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("bash");
    let text = ok_stdout(&format!("bash completion of {words:?}"), &out);
    let mut reply: Vec<String> = text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
    reply.sort();
    reply
}

#[tokio::test]
async fn bash_completes_commands_flags_and_names_from_the_hub() {
    let bed = cli_bed().await;
    let script = bed.tmp.path().join("kdfed.bash");
    std::fs::write(&script, ok_stdout("completions bash", &bed.kdfed(&["completions", "bash"]))).expect("script");
    let kc = bed.kubeconfig.clone();
    let c = |words: &[&str]| complete(&bed, &script, &kc, words);

    // Commands and flags, from the CLI's definition.
    assert_eq!(c(&["kdfed", "mem"]), ["member"]);
    assert_eq!(c(&["kdfed", "member", "c"]), ["cordon"]);
    assert_eq!(c(&["kdfed", "cluster", "list", "--wa"]), ["--watch"]);
    assert_eq!(c(&["kdfed", "console", "--adm"]), ["--admin-address"]);
    assert_eq!(c(&["kdfed", "member", "list", "-o", ""]), ["json", "name", "wide", "yaml"]);
    assert!(!c(&["kdfed", "__compl"]).iter().any(|w| w.contains("__complete")), "the hidden command is offered");

    // Names from the hub where a command takes one.
    assert_eq!(c(&["kdfed", "member", "cordon", ""]), ["east", "north", "west"]);
    assert_eq!(c(&["kdfed", "member", "remove", "we"]), ["west"]);
    assert_eq!(
        c(&["kdfed", "member", "list", "east", ""]),
        ["north", "west"],
        "names already given are not offered again"
    );
    assert_eq!(c(&["kdfed", "cluster", "list", ""]), ["alpha", "beta", "gamma"]);
    assert_eq!(c(&["kdfed", "cluster", "list", "-n", "other", ""]), ["gamma"], "-n narrows cluster names");
    assert_eq!(c(&["kdfed", "catalog", "list", "sp"]), ["spark-lite"]);
    // The command line's own --kubeconfig wins over $KUBECONFIG.
    let nowhere = bed.tmp.path().join("missing.kubeconfig");
    let kc_flag = kc.to_str().expect("path");
    let with_flag = complete(&bed, &script, &nowhere, &["kdfed", "--kubeconfig", kc_flag, "member", "uncordon", "n"]);
    assert_eq!(with_flag, ["north"]);

    // No hub: no names, quickly, and no file names either.
    let started = Instant::now();
    assert!(complete(&bed, &script, &nowhere, &["kdfed", "member", "cordon", ""]).is_empty());
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[tokio::test]
async fn zsh_and_fish_scripts_and_man_pages_are_generated() {
    let bed = cli_bed().await;
    let zsh = ok_stdout("completions zsh", &bed.kdfed(&["completions", "zsh"]));
    assert!(zsh.starts_with("#compdef kdfed") && zsh.contains("'--watch["), "{}", &zsh[..200.min(zsh.len())]);
    let fish = ok_stdout("completions fish", &bed.kdfed(&["completions", "fish"]));
    assert!(fish.contains("complete -c kdfed") && fish.contains("kdfed __complete"), "{fish}");
    let out = bed.kdfed(&["completions", "powershell"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("'powershell'") && err.contains("bash, zsh, fish"), "{err}");

    // The hidden __complete answers names, and fails (static completion) elsewhere.
    let names = ok_stdout("__complete", &bed.kdfed(&["__complete", "3", "kdfed", "member", "cordon", ""]));
    assert_eq!(names, "east\nnorth\nwest\n");
    assert!(!bed.kdfed(&["__complete", "2", "kdfed", "member", ""]).status.success());

    let man = ok_stdout("man", &bed.kdfed(&["man"]));
    assert!(man.contains(".TH kdfed 1") && man.contains("member") && man.contains("completions"), "{man}");
    let dir = bed.tmp.path().join("man");
    let listed = ok_stdout("man --dir", &bed.kdfed(&["man", "--dir", dir.to_str().expect("path")]));
    for page in [
        "kdfed.1",
        "kdfed-member.1",
        "kdfed-member-add.1",
        "kdfed-cluster-list.1",
        "kdfed-completions.1",
        "kdfed-console.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}\n{listed}"));
        assert!(text.contains(".TH"), "{page}");
    }
    assert!(!dir.join("kdfed-__complete.1").exists(), "the hidden command has a page");
    let page = std::fs::read_to_string(dir.join("kdfed-cluster-list.1")).expect("page");
    assert!(page.contains("watch") && page.contains("wide"), "{page}");
    // man renders it (when man is installed).
    if Command::new("man").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let out = Command::new("man")
            .arg("-l")
            .arg(dir.join("kdfed-member-list.1"))
            .env("MANPAGER", "cat")
            .output()
            .expect("man");
        assert!(String::from_utf8_lossy(&out.stdout).contains("kdfed-member-list"), "{out:?}");
    }
}

/// Names the zsh script's `_kdfed_names` offers for `words` (the last one being completed):
/// a real zsh runs the generated script; only the completion system's `compdef` and
/// `compadd` (which exist inside an interactive completion alone) are stood in for.
fn complete_zsh(bed: &CliBed, script: &Path, kubeconfig: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        r#"compdef() {{ : }}
compadd() {{ [[ $1 == -- ]] && shift; print -l -- "$@" }}
source '{}'
_kdfed() {{ print -- STATIC }}
words=({})
CURRENT={}
_kdfed_names"#,
        script.display(),
        quoted.join(" "),
        words.len()
    );
    let bin = bed.kdfed.parent().expect("bin dir");
    let out = Command::new("zsh")
        .args(["-f", "-c", &program])
        .env("PATH", bed.path_with(bin))
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("zsh (apt-get install zsh)");
    let text = ok_stdout(&format!("zsh completion of {words:?}"), &out);
    let mut reply: Vec<String> = text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
    reply.sort();
    reply
}

#[tokio::test]
async fn zsh_completes_names_from_the_hub() {
    let bed = cli_bed().await;
    let script = bed.tmp.path().join("_kdfed");
    std::fs::write(&script, ok_stdout("completions zsh", &bed.kdfed(&["completions", "zsh"]))).expect("script");
    let kc = bed.kubeconfig.clone();
    let c = |words: &[&str]| complete_zsh(&bed, &script, &kc, words);
    // zsh's compadd filters by the typed prefix itself, so every name is offered.
    assert_eq!(c(&["kdfed", "member", "cordon", ""]), ["east", "north", "west"]);
    assert_eq!(c(&["kdfed", "cluster", "list", "-n", "other", ""]), ["gamma"]);
    assert_eq!(c(&["kdfed", "catalog", "list", "sp"]), ["spark-lite"]);
    // Not a name: the static completion clap generated.
    assert_eq!(c(&["kdfed", "mem"]), ["STATIC"]);
    // No hub: no names.
    let nowhere = bed.tmp.path().join("missing.kubeconfig");
    assert!(complete_zsh(&bed, &script, &nowhere, &["kdfed", "member", "cordon", ""]).is_empty());
}

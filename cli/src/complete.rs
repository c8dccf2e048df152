//! Shell completions and man pages, generated from the command line's definition, and the
//! hidden `__complete` command through which the bash, zsh and fish scripts complete member,
//! cluster and app names from the hub.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kube::{Api, ResourceExt};

use crate::fleet::Target;

/// A shell `kdfed completions` writes a script for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash (names from the hub too).
    Bash,
    /// zsh (names from the hub too).
    Zsh,
    /// fish (names from the hub too).
    Fish,
}

/// The hidden subcommand the completion scripts call for names.
pub const COMMAND: &str = "__complete";

/// `kdfed __complete INDEX WORDS...`: not in the public command line, so not in the
/// completion scripts nor the man pages.
pub fn command() -> clap::Command {
    clap::Command::new(COMMAND)
        .hide(true)
        .about("Names for shell completion: INDEX of the word being completed, then the command line's words")
        .arg(clap::Arg::new("index").required(true).value_parser(clap::value_parser!(usize)))
        .arg(clap::Arg::new("words").num_args(0..).trailing_var_arg(true).allow_hyphen_values(true))
}

/// Runs `__complete`: exits 0 with the names (one a line) where the word is a member,
/// cluster or app name, and 1 elsewhere, where the script completes from its own table.
pub async fn run(args: &clap::ArgMatches) -> std::process::ExitCode {
    let index = args.get_one::<usize>("index").copied().unwrap_or(0);
    let words: Vec<String> = args.get_many::<String>("words").map(|w| w.cloned().collect()).unwrap_or_default();
    if names(index, &words).await { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}

/// Longest a completion waits for the hub.
const HUB_TIMEOUT: Duration = Duration::from_secs(5);

/// The completion script for `shell`: clap_complete's, and a wrapper that asks
/// `kdfed __complete` for names first.
pub fn script(shell: Shell, command: &mut clap::Command) -> String {
    let name = command.get_name().to_string();
    let mut out = Vec::new();
    match shell {
        Shell::Bash => clap_complete::generate(clap_complete::Shell::Bash, command, &name, &mut out),
        Shell::Zsh => clap_complete::generate(clap_complete::Shell::Zsh, command, &name, &mut out),
        Shell::Fish => clap_complete::generate(clap_complete::Shell::Fish, command, &name, &mut out),
    }
    let mut text = String::from_utf8_lossy(&out).into_owned();
    match shell {
        Shell::Bash => text.push_str(BASH_NAMES),
        Shell::Fish => text.push_str(FISH_NAMES),
        Shell::Zsh => text.push_str(ZSH_NAMES),
    }
    text
}

/// Appended to clap_complete's bash script: names from the hub where a command takes one,
/// the static completion elsewhere (`__complete` exits non-zero there).
const BASH_NAMES: &str = r#"
# Member, cluster and app names from the hub (kdfed __complete), else the above.
_kdfed_names() {
    local names
    if names=$("${COMP_WORDS[0]}" __complete "$COMP_CWORD" "${COMP_WORDS[@]}" 2>/dev/null); then
        local IFS=$'\n'
        COMPREPLY=($(compgen -W "$names" -- "${COMP_WORDS[COMP_CWORD]}"))
        return 0
    fi
    _kdfed "$@"
}
complete -F _kdfed_names -o bashdefault -o default kdfed
"#;

/// Appended to clap_complete's zsh script: names from the hub where a command takes one
/// (`words` and `CURRENT` are zsh's completion context), the static completion elsewhere.
const ZSH_NAMES: &str = r#"
# Member, cluster and app names from the hub (kdfed __complete), else the above.
_kdfed_names() {
    local out
    if out=$("${words[1]}" __complete $((CURRENT - 1)) "${words[@]}" 2>/dev/null); then
        local -a names
        names=(${(f)out})
        compadd -- "${names[@]}"
        return 0
    fi
    _kdfed "$@"
}
compdef _kdfed_names kdfed
"#;

/// Appended to clap_complete's fish script: names from the hub where a command takes one.
const FISH_NAMES: &str = r#"
# Member, cluster and app names from the hub (kdfed __complete).
function __kdfed_names
    set -l words (commandline -opc) (commandline -ct)
    kdfed __complete (math (count $words) - 1) $words 2>/dev/null
end
complete -c kdfed -f -a '(__kdfed_names)'
"#;

/// The man page of the whole command line (roff).
pub fn man_page(command: &clap::Command) -> Result<String> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut out).context("render the man page")?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Writes one man page per command (`kdfed.1`, `kdfed-member.1`, `kdfed-member-add.1`, ...)
/// into `dir`; returns their paths.
pub fn man_pages(command: &clap::Command, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("--dir {}: cannot create it", dir.display()))?;
    let mut command = command.clone().bin_name("kdfed");
    command.build();
    let mut written = Vec::new();
    write_pages(&command, "kdfed", dir, &mut written)?;
    Ok(written)
}

/// Writes the page of `command` (named `name`) and those of its visible subcommands.
fn write_pages(command: &clap::Command, name: &str, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let path = dir.join(format!("{name}.1"));
    let mut out = Vec::new();
    clap_mangen::Man::new(command.clone().name(name.to_string()))
        .render(&mut out)
        .with_context(|| format!("render {name}.1"))?;
    std::fs::write(&path, out).with_context(|| format!("write {}", path.display()))?;
    written.push(path);
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

/// What kind of name the word being completed is.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Member,
    Cluster,
    App,
}

/// Flags that take a value (the next word), so that their value is not a positional.
const VALUE_FLAGS: &[&str] =
    &["--kubeconfig", "--context", "-n", "--namespace", "-o", "--output", "--label", "--server", "--token-seconds"];

/// The command line `words` (the program first) read as the CLI would: the positionals
/// before `index`, and the values of `--kubeconfig`, `--context` and `-n` anywhere. `None`
/// when the word at `index` is a flag or a flag's value.
fn read_words(index: usize, words: &[String]) -> Option<(Vec<String>, Target)> {
    let mut positionals = Vec::new();
    let mut target = Target { kubeconfig: None, context: None, namespace: None };
    let mut i = 1;
    while i < words.len() {
        if i == index {
            i += 1;
            continue;
        }
        let word = words[i].as_str();
        let (flag, inline) = match word.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f, Some(v.to_string())),
            _ => (word, None),
        };
        if VALUE_FLAGS.contains(&flag) {
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    if i == index {
                        return None; // completing this flag's value
                    }
                    words.get(i).cloned().unwrap_or_default()
                }
            };
            match flag {
                "--kubeconfig" => target.kubeconfig = Some(PathBuf::from(value)),
                "--context" => target.context = Some(value),
                "-n" | "--namespace" => target.namespace = Some(value),
                _ => {}
            }
        } else if !word.starts_with('-') && i < index {
            positionals.push(word.to_string());
        }
        i += 1;
    }
    if words.get(index).is_some_and(|w| w.starts_with('-')) {
        return None;
    }
    Some((positionals, target))
}

/// Which name the command `positionals` takes next, if any.
fn wanted(positionals: &[String]) -> Option<Wanted> {
    let p: Vec<&str> = positionals.iter().map(String::as_str).collect();
    match p.as_slice() {
        ["member", "remove" | "cordon" | "uncordon"] => Some(Wanted::Member),
        ["member", "list", ..] => Some(Wanted::Member),
        ["cluster", "list", ..] => Some(Wanted::Cluster),
        ["catalog", "list", ..] => Some(Wanted::App),
        ["catalog", "show"] => Some(Wanted::App),
        _ => None,
    }
}

/// `kdfed __complete INDEX WORDS...`: prints the names the word at `index` can be (from
/// the hub; none when it cannot be reached in time) and returns true, or returns false
/// when that word is not a name.
pub async fn names(index: usize, words: &[String]) -> bool {
    let Some((positionals, target)) = read_words(index, words) else { return false };
    let Some(wanted) = wanted(&positionals) else { return false };
    let already: Vec<&String> = positionals.iter().skip(2).collect();
    if let Ok(Ok(names)) = tokio::time::timeout(HUB_TIMEOUT, fetch(&target, &wanted)).await {
        let text: String = names.into_iter().filter(|n| !already.contains(&n)).map(|n| n + "\n").collect();
        // A closed pipe is no reason to fail a completion.
        let _ = crate::write_stdout(&text);
    }
    true
}

/// The names of `wanted` on the hub (in -n's namespace, for clusters and apps).
async fn fetch(target: &Target, wanted: &Wanted) -> Result<Vec<String>> {
    let client = target.client().await?;
    let ns = target.namespace.as_deref();
    let mut names: Vec<String> = match wanted {
        Wanted::Member => kdfed_hub::registry::list_members(&client).await?.iter().map(ResourceExt::name_any).collect(),
        Wanted::Cluster => {
            let api: Api<KubeDirectorCluster> =
                ns.map_or_else(|| Api::all(client.clone()), |n| Api::namespaced(client.clone(), n));
            api.list(&Default::default()).await?.items.iter().map(ResourceExt::name_any).collect()
        }
        Wanted::App => {
            let api: Api<KubeDirectorApp> =
                ns.map_or_else(|| Api::all(client.clone()), |n| Api::namespaced(client.clone(), n));
            api.list(&Default::default()).await?.items.iter().map(ResourceExt::name_any).collect()
        }
    };
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_are_completed_where_a_command_takes_one() {
        let read = |index: usize, words: &[&str]| read_words(index, &w(words));
        let (p, t) = read(5, &["kdfed", "--kubeconfig", "/k", "member", "cordon", ""]).expect("a");
        assert_eq!(p, ["member", "cordon"]);
        assert_eq!(wanted(&p), Some(Wanted::Member));
        assert_eq!(t.kubeconfig, Some(PathBuf::from("/k")));
        let (p, t) = read(6, &["kdfed", "cluster", "-n=ns", "list", "--context", "c", ""]).expect("b");
        assert_eq!(wanted(&p), Some(Wanted::Cluster));
        assert_eq!((t.namespace.as_deref(), t.context.as_deref()), (Some("ns"), Some("c")));
        // A flag's value or a flag is not a name.
        assert!(read(3, &["kdfed", "member", "list", "-o"]).is_none());
        assert!(read(4, &["kdfed", "member", "list", "-o", ""]).is_none());
        assert!(read(3, &["kdfed", "member", "list", "--wat"]).is_none());
        // Flags after the word being completed count too.
        let (p, t) = read(2, &["kdfed", "member", "", "--context", "c"]).expect("c");
        assert_eq!((p.as_slice(), t.context.as_deref()), (["member".to_string()].as_slice(), Some("c")));
        assert_eq!(wanted(&w(&["member", "remove"])), Some(Wanted::Member));
        assert_eq!(wanted(&w(&["member", "remove", "east"])), None);
        assert_eq!(wanted(&w(&["catalog", "list", "a"])), Some(Wanted::App));
        assert_eq!(wanted(&w(&["member", "add"])), None);
        assert_eq!(wanted(&w(&["member"])), None);
    }
}

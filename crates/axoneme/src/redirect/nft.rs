//! Installing the redirects in the nftables table `inet axoneme` (and the policy route TPROXY
//! needs), and removing them. Each function here runs `nft` or `ip` and blocks; the ruleset is
//! built by [`ruleset`], a pure function.
//!
//! The table is replaced whole in one `nft -f` transaction, so applying is idempotent and atomic.
//! Traffic carrying the proxy's socket mark (its own upstream connections) is never steered.
//! TPROXY additionally needs a policy route sending packets with the TPROXY mark to the local
//! stack; it is installed with the table and removed with it.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};

use axoneme_sdk::Direction;

use super::plan::Redirect;
use crate::config::{ListenerMode, RedirectConfig};

/// The nftables table holding every rule of Axoneme (family `inet`).
pub const TABLE: &str = "axoneme";

/// An address family as nftables names it in rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Family {
        match ip.to_canonical() {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn keyword(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
}

/// Characters kept in rule comments (the rest become `_`), so that names cannot break the
/// ruleset's syntax.
fn comment(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' | ' ' | ':' | '/' => c,
            _ => '_',
        })
        .collect()
}

/// The ruleset replacing the table with the rules of `redirects`, for `nft -f`.
pub fn ruleset(redirects: &[Redirect], settings: &RedirectConfig) -> String {
    let mark = settings.mark;
    let tproxy_mark = settings.tproxy_mark;
    let mut tproxy = Vec::new();
    let mut nat = Vec::new();
    // Traffic no listener may take, dropped unless a rule steered it to one.
    let mut refused = Vec::new();
    for redirect in redirects {
        for family in [Family::V4, Family::V6] {
            let ips: Vec<String> = redirect
                .ips
                .iter()
                .filter(|ip| Family::of(**ip) == family)
                .map(IpAddr::to_string)
                .collect();
            if ips.is_empty() {
                continue;
            }
            let side = match redirect.direction {
                Direction::Ingress => "daddr",
                Direction::Egress => "saddr",
            };
            let fam = family.keyword();
            let matches = format!(
                "{fam} {side} {{ {} }} tcp dport {}",
                ips.join(", "),
                redirect.port
            );
            // What the rules are for, in their comments: "cache ingress 11211 memcache".
            let about = format!(
                "{} {} {} {}",
                redirect.endpoint,
                crate::config::direction_name::name(redirect.direction),
                redirect.port,
                redirect.l7proto,
            );
            let Some(target) = &redirect.listener else {
                let note = comment(&format!("{about}: no listener"));
                refused.push(format!(
                    "{matches} log prefix \"axoneme-refused: \" drop comment \"{note}\""
                ));
                continue;
            };
            let listen = target.address.ip().to_canonical();
            let to = if listen.is_unspecified() {
                None
            } else if Family::of(listen) == family {
                Some(SocketAddr::new(listen, target.address.port()))
            } else {
                // A listener bound to an address of the other family cannot take this traffic.
                continue;
            };
            let note = comment(&format!("{about} to {}", target.name));
            match target.mode {
                ListenerMode::Tproxy => {
                    let to = match to {
                        Some(to) => to.to_string(),
                        None => format!(":{}", target.address.port()),
                    };
                    tproxy.push(format!(
                        "{matches} meta mark set {tproxy_mark:#x} tproxy {fam} to {to} accept comment \"{note}\""
                    ));
                }
                ListenerMode::Redirect => {
                    let action = match to {
                        Some(to) => format!("dnat {fam} to {to}"),
                        None => format!("redirect to :{}", target.address.port()),
                    };
                    nat.push(format!("{matches} {action} comment \"{note}\""));
                }
                ListenerMode::Proxy => {}
            }
        }
    }
    let chain =
        |name: &str, hook: &str, kind: &str, priority: i32, head: &[String], rules: &[String]| {
            let mut text = format!(
            "\tchain {name} {{\n\t\ttype {kind} hook {hook} priority {priority}; policy accept;\n"
        );
            for rule in head.iter().chain(rules) {
                text.push_str(&format!("\t\t{rule}\n"));
            }
            text.push_str("\t}\n");
            text
        };
    let skip_own = format!("meta mark {mark:#x} return");
    let established =
        format!("meta l4proto tcp socket transparent 1 meta mark set {tproxy_mark:#x} accept");
    let mut chains = [
        chain(
            "tproxy_prerouting",
            "prerouting",
            "filter",
            -150,
            &[skip_own.clone(), established],
            &tproxy,
        ),
        chain(
            "redirect_prerouting",
            "prerouting",
            "nat",
            -100,
            std::slice::from_ref(&skip_own),
            &nat,
        ),
        chain(
            "redirect_output",
            "output",
            "nat",
            -100,
            std::slice::from_ref(&skip_own),
            &nat,
        ),
    ]
    .concat();
    if !refused.is_empty() {
        // After the NAT chains: what TPROXY steered carries its mark, what REDIRECT or DNAT
        // steered is DNATed, and the proxy's own connections carry theirs.
        let steered = [
            skip_own,
            format!("meta mark {tproxy_mark:#x} return"),
            "ct status dnat return".to_string(),
        ];
        for hook in ["prerouting", "output"] {
            let name = format!("refuse_{hook}");
            chains.push_str(&chain(&name, hook, "filter", -90, &steered, &refused));
        }
    }
    format!(
        "table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n{chains}}}\n"
    )
}

/// Runs a command, with `input` on its standard input; its error output on failure.
fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("{program}: cannot write its input: {e}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!(
            "{program} {}: {}{}",
            args.join(" "),
            stderr.trim(),
            missing_net_admin(&stderr)
        ))
    }
}

/// What to do when `nft` or `ip` said (`stderr`) that it lacks the privilege to change the
/// rules; empty when it said something else.
fn missing_net_admin(stderr: &str) -> String {
    if !stderr.contains("Operation not permitted") && !stderr.contains("Permission denied") {
        return String::new();
    }
    format!(
        " (managing redirect rules needs CAP_NET_ADMIN: {}; or set redirect.manage: false and \
         install the rules another way)",
        crate::proxy::sockets::GRANT_NET_ADMIN
    )
}

/// Installs `redirects` (replacing the table), and the TPROXY route when some redirect needs
/// it. Blocking: it runs `nft` and `ip`.
pub fn install(redirects: &[Redirect], settings: &RedirectConfig) -> Result<(), String> {
    run("nft", &["-f", "-"], Some(&ruleset(redirects, settings)))?;
    let tproxy = redirects.iter().any(|r| {
        r.listener
            .as_ref()
            .is_some_and(|l| l.mode == ListenerMode::Tproxy)
    });
    if tproxy {
        add_tproxy_route(settings)
    } else {
        remove_tproxy_route(settings)
    }
}

/// Removes the table and the TPROXY route. Blocking; removing what is absent succeeds.
pub fn remove(settings: &RedirectConfig) -> Result<(), String> {
    run(
        "nft",
        &["-f", "-"],
        Some(&format!(
            "table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"
        )),
    )?;
    remove_tproxy_route(settings)
}

/// The installed table as `nft` lists it; `None` when it is absent. Blocking.
pub fn installed() -> Option<String> {
    run("nft", &["list", "table", "inet", TABLE], None).ok()
}

fn add_tproxy_route(settings: &RedirectConfig) -> Result<(), String> {
    let mark = format!("{:#x}", settings.tproxy_mark);
    let table = settings.route_table.to_string();
    for (family, default) in [("-4", "0.0.0.0/0"), ("-6", "::/0")] {
        run(
            "ip",
            &[
                family, "route", "replace", "local", default, "dev", "lo", "table", &table,
            ],
            None,
        )?;
        let present = run(
            "ip",
            &[family, "rule", "list", "fwmark", &mark, "lookup", &table],
            None,
        )?;
        if present.trim().is_empty() {
            run(
                "ip",
                &[family, "rule", "add", "fwmark", &mark, "lookup", &table],
                None,
            )?;
        }
    }
    Ok(())
}

fn remove_tproxy_route(settings: &RedirectConfig) -> Result<(), String> {
    let mark = format!("{:#x}", settings.tproxy_mark);
    let table = settings.route_table.to_string();
    for family in ["-4", "-6"] {
        let present = run(
            "ip",
            &[family, "rule", "list", "fwmark", &mark, "lookup", &table],
            None,
        )?;
        for _ in present.lines().filter(|l| !l.trim().is_empty()) {
            run(
                "ip",
                &[family, "rule", "del", "fwmark", &mark, "lookup", &table],
                None,
            )?;
        }
        // The table holds only the route added here; an absent table is fine.
        let _ = run("ip", &[family, "route", "flush", "table", &table], None);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redirect::plan::Target;

    #[test]
    fn nft_without_cap_net_admin_says_what_is_missing_and_how_to_fix_it() {
        if test_uid() != 0 {
            eprintln!("skipped: switching to an unprivileged user needs root");
            return;
        }
        // nft run as an unprivileged user with no capabilities, as an agent without them runs it.
        let error = run(
            "setpriv",
            &[
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "nft",
                "list",
                "tables",
            ],
            None,
        )
        .unwrap_err();
        assert!(
            error.contains("Operation not permitted")
                && error.contains("managing redirect rules needs CAP_NET_ADMIN")
                && error.contains("AmbientCapabilities=CAP_NET_ADMIN")
                && error.contains("redirect.manage: false"),
            "{error}"
        );
        assert_eq!(
            missing_net_admin("Error: syntax error, unexpected junk"),
            ""
        );
    }

    /// The user this test runs as, from the kernel's view of the process.
    fn test_uid() -> u32 {
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap())
    }

    fn redirect(direction: Direction, mode: ListenerMode, address: &str) -> Redirect {
        Redirect {
            endpoint: "cache".into(),
            direction,
            port: 11211,
            l7proto: "memcache".into(),
            ips: vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            listener: Some(Target {
                name: "in".into(),
                mode,
                address: address.parse().unwrap(),
            }),
        }
    }

    #[test]
    fn ruleset_steers_each_family_to_its_listener() {
        let settings = RedirectConfig::default();
        let mut unserved = redirect(Direction::Ingress, ListenerMode::Tproxy, "[::]:1");
        unserved.listener = None;
        let text = ruleset(
            &[
                redirect(Direction::Ingress, ListenerMode::Tproxy, "[::]:15001"),
                redirect(Direction::Egress, ListenerMode::Redirect, "10.0.0.9:15002"),
                unserved,
            ],
            &settings,
        );
        assert!(text.starts_with("table inet axoneme {}\ndelete table inet axoneme\n"));
        for rule in [
            "ip daddr { 10.0.0.2 } tcp dport 11211 meta mark set 0x4159 tproxy ip to :15001 accept",
            "ip6 daddr { fd00::2 } tcp dport 11211 meta mark set 0x4159 tproxy ip6 to :15001 accept",
            "ip saddr { 10.0.0.2 } tcp dport 11211 dnat ip to 10.0.0.9:15002",
            "meta mark 0x4158 return",
        ] {
            assert!(text.contains(rule), "{rule} not in\n{text}");
        }
        // A listener bound to an IPv4 address takes no IPv6 traffic.
        assert!(!text.contains("ip6 saddr"), "{text}");
        // What no listener takes is dropped after the NAT chains, unless something steered it.
        let refusal = "ip daddr { 10.0.0.2 } tcp dport 11211 log prefix \"axoneme-refused: \" drop";
        let chains: Vec<&str> = text.split("chain ").skip(1).collect();
        for (chain, hook) in [(chains[3], "prerouting"), (chains[4], "output")] {
            assert!(
                chain.starts_with(&format!(
                    "refuse_{hook} {{\n\t\ttype filter hook {hook} priority -90;"
                )),
                "{chain}"
            );
            let dropped = chain.find(refusal).unwrap();
            for steered in [
                "meta mark 0x4158 return",
                "meta mark 0x4159 return",
                "ct status dnat return",
            ] {
                assert!(
                    chain.find(steered).is_some_and(|at| at < dropped),
                    "{chain}"
                );
            }
        }
        assert!(chains[..3].iter().all(|c| !c.contains("drop")), "{text}");
        let served = ruleset(
            &[redirect(Direction::Ingress, ListenerMode::Tproxy, "[::]:1")],
            &settings,
        );
        assert!(!served.contains("refuse_"), "{served}");
        assert_eq!(text.matches("dport 11211").count(), 8, "{text}");
    }
}

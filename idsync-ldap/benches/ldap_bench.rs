//! Benchmarks against a local slapd holding N inetOrgPerson entries (default 100,000),
//! loaded offline with `slapadd -q`:
//!
//! 1. full read of all accounts through `LdapDirectory` (paged, 1000 per page, mapped to
//!    `Account`s), beside `ldapsearch -E pr=1000/noprompt` of the same entries, alternating,
//!    median of RUNS;
//! 2. one modified entry picked up by `Engine::run_changes` (RFC 4533 content sync) and
//!    applied to an in-memory hub, end to end.
//!
//! Run: `cargo bench -p idsync-ldap --bench ldap_bench` (env `BENCH_N`, `BENCH_RUNS`).
//! Not run by `cargo test`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use idsync_core::{Engine, Guard, Job, MemoryAdapter, MemoryStore, Source, SourceExt};
use idsync_ldap::{Dialect, LdapConfig, LdapDirectory};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/services/openldap.sh")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    if !out.status.success() {
        panic!(
            "{cmd:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openldap(action: &str, dir: &Path, ports: (u16, u16)) -> String {
    run(Command::new("bash")
        .arg(script())
        .arg(action)
        .arg(dir)
        .env("OPENLDAP_PORT", ports.0.to_string())
        .env("OPENLDAP_LDAPS_PORT", ports.1.to_string())
        .env("OPENLDAP_OWNER_PID", std::process::id().to_string()))
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("slapd");
    let ports = (free_port(), free_port());
    let suffix = "dc=example,dc=com";

    // instance, then an offline bulk load
    openldap("start", &dir, ports);
    openldap("stop", &dir, ports);
    let ldif = tmp.path().join("bulk.ldif");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&ldif).unwrap());
        for i in 1..=n {
            write!(
                f,
                "dn: uid=user{i:06},ou=people,{suffix}\nobjectClass: top\nobjectClass: person\n\
                 objectClass: organizationalPerson\nobjectClass: inetOrgPerson\nuid: user{i:06}\n\
                 cn: User {i:06}\nsn: Surname{i:06}\ngivenName: Given{i:06}\n\
                 mail: user{i:06}@example.com\nemployeeNumber: {i}\ndisplayName: User Number {i}\n\
                 title: Engineer\nmobile: +1 555 {i:07}\n\n"
            )
            .unwrap();
        }
    }
    let t = Instant::now();
    run(Command::new("slapadd")
        .args(["-q", "-w", "-F"])
        .arg(dir.join("slapd.d"))
        .args(["-b", suffix, "-l"])
        .arg(&ldif));
    let load = t.elapsed();
    let facts = openldap("start", &dir, ports);
    let var = |k: &str| {
        facts
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_owned))
            .unwrap()
    };
    let (url, bind_dn, bind_pw) = (var("LDAP_URL"), var("LDAP_BIND_DN"), var("LDAP_BIND_PW"));
    println!("entries: {n}; slapadd -q: {:.2} s", load.as_secs_f64());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = LdapConfig::new(&url, suffix, Dialect::Openldap).with_bind(&bind_dn, &bind_pw);
    cfg.page_size = 1000;
    let source = Arc::new(LdapDirectory::new(cfg).unwrap());

    let mut ours = Vec::new();
    let mut reference = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = run(Command::new("bash").arg("-c").arg(format!(
            "ldapsearch -x -LLL -H {url} -D {bind_dn} -w {bind_pw} -b ou=people,{suffix} \
             -E pr=1000/noprompt '(objectClass=inetOrgPerson)' | grep -c '^dn:'"
        )));
        reference.push(t.elapsed());
        assert_eq!(
            out.trim().parse::<usize>().unwrap(),
            n,
            "ldapsearch read them all"
        );

        let t = Instant::now();
        let (count, bytes) = rt.block_on(async {
            let mut s = source.account_stream(Some(1000));
            let (mut count, mut bytes) = (0usize, 0usize);
            while let Some(a) = s.next().await {
                let a = a.unwrap();
                count += 1;
                bytes += a.username.len();
            }
            (count, bytes)
        });
        ours.push(t.elapsed());
        assert_eq!(count, n);
        assert!(bytes > 0);
    }
    let (o, r) = (median(&mut ours), median(&mut reference));
    println!(
        "full read, {n} entries, page 1000, median of {runs}: idsync-ldap {:.3} s, ldapsearch {:.3} s, ratio {:.2}",
        o.as_secs_f64(),
        r.as_secs_f64(),
        o.as_secs_f64() / r.as_secs_f64()
    );
    println!("  idsync-ldap runs: {ours:?}\n  ldapsearch runs: {reference:?}");

    // incremental: full sync into an in-memory hub, change one entry, run_changes
    rt.block_on(async {
        let hub = Arc::new(MemoryAdapter::new("hub").assigning_anchors());
        let engine = Engine::new(Arc::new(MemoryStore::new()));
        let job = Job::new("ldap-to-hub", source.clone(), hub.clone())
            .with_page_size(1000)
            .with_guard(Guard::off());
        let t = Instant::now();
        let report = engine.run(&job).await.unwrap();
        println!("engine full sync into the memory hub: {:.2} s ({:?})", t.elapsed().as_secs_f64(), report.counts);

        let (conn, mut ldap) = ldap3::LdapConnAsync::new(&url).await.unwrap();
        ldap3::drive!(conn);
        ldap.simple_bind(&bind_dn, &bind_pw).await.unwrap().success().unwrap();
        let mut times = Vec::new();
        for round in 0..runs {
            let title = format!("Principal {round}");
            ldap.modify(
                &format!("uid=user000042,ou=people,{suffix}"),
                vec![ldap3::Mod::Replace("title", [title.as_str()].into())],
            )
            .await
            .unwrap()
            .success()
            .unwrap();
            let t = Instant::now();
            let report = engine.run_changes(&job).await.unwrap();
            times.push(t.elapsed());
            let snap = hub.snapshot().unwrap();
            let found = snap.accounts.values().any(|a| a.username == "user000042" && a.title.as_deref() == Some(title.as_str()));
            assert!(found, "the change reached the hub ({:?})", report.counts);
        }
        println!(
            "one modified entry, run_changes (content sync -> plan -> apply to hub), median of {runs}: {:.3} s; runs {times:?}",
            median(&mut times).as_secs_f64()
        );

        // the LDAP side alone: one content-sync read of one changed entry
        let mut reads = Vec::new();
        for round in 0..runs {
            let cursor = source.current_cursor().await.unwrap();
            let title = format!("Lead {round}");
            ldap.modify(
                &format!("uid=user000043,ou=people,{suffix}"),
                vec![ldap3::Mod::Replace("title", [title.as_str()].into())],
            )
            .await
            .unwrap()
            .success()
            .unwrap();
            let t = Instant::now();
            let cs = source.changes(&cursor).await.unwrap();
            reads.push(t.elapsed());
            assert_eq!(cs.account_upserts.len(), 1);
        }
        println!(
            "  of which the LDAP read (changes(cursor) for one changed entry), median of {runs}: {:.4} s; runs {reads:?}",
            median(&mut reads).as_secs_f64()
        );
    });
    openldap("stop", &dir, ports);
}

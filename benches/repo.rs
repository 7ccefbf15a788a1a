//! Benchmarks of the issue: a clone from a warm mirror against a cold clone of a 10,000-file
//! repository, side by side in one run; and what verification adds to the commands it runs.
//!
//! `cargo bench --bench repo` (prints a table; figures go to docs/PERFORMANCE.md).

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use baton::verify::{verify, CheckSpec, Kind, VerifyOptions};
use baton::workspace::{CloneOptions, MemoryJournal, MirrorCache, Workspace};
use common::{git, HttpGit};

/// Files in the benchmark repository, as the issue asks.
const FILES: usize = 10_000;
/// Commits of history after the first, each touching `TOUCHED` files.
const HISTORY: usize = 30;
const TOUCHED: usize = 20;
/// Rounds of each measurement; the median is reported.
const ROUNDS: usize = 3;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn make_repo(root: &Path) -> std::path::PathBuf {
    let seed = root.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    git(&seed, &["init", "-q", "-b", "main"]);
    for i in 0..FILES {
        let dir = seed.join(format!("d{:03}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        let body = format!("line of file {i}\n").repeat(40);
        std::fs::write(dir.join(format!("f{i:05}.txt")), body).unwrap();
    }
    git(&seed, &["add", "-A"]);
    git(&seed, &["commit", "-qm", "initial"]);
    for c in 0..HISTORY {
        for t in 0..TOUCHED {
            let i = (c * 7919 + t * 104_729) % FILES;
            let p = seed.join(format!("d{:03}/f{i:05}.txt", i / 100));
            let mut text = std::fs::read_to_string(&p).unwrap();
            text.push_str(&format!("change {c}\n"));
            std::fs::write(p, text).unwrap();
        }
        git(&seed, &["commit", "-qam", &format!("change {c}")]);
    }
    let bare = root.join("served/remote.git");
    std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
    git(
        root,
        &[
            "clone",
            "-q",
            "--bare",
            seed.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    git(&bare, &["repack", "-adq"]);
    bare
}

async fn clone(cache: &MirrorCache, url: &str, dest: &Path) -> Duration {
    let t = Instant::now();
    let ws = Workspace::clone(
        cache,
        CloneOptions::new(url, dest),
        MemoryJournal::default(),
    )
    .await
    .unwrap();
    let d = t.elapsed();
    assert!(ws.root().join("d099/f09999.txt").exists());
    d
}

async fn wait_for_spare(cache: &MirrorCache) {
    for _ in 0..600 {
        let ready = std::fs::read_dir(cache.root())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".spare"));
        if ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no spare checkout appeared");
}

async fn clone_bench(root: &Path, label: &str, url: &str) {
    let mut cold = Vec::new();
    let mut warm_plain = Vec::new();
    let mut warm_spare = Vec::new();
    for round in 0..ROUNDS {
        let data = root.join(format!("data-{label}-{round}"));
        let cache = MirrorCache::new(&data);
        cold.push(clone(&cache, url, &data.join("ws/cold")).await);
        warm_plain.push(clone(&cache, url, &data.join("ws/warm")).await);
        let spare_cache = cache.clone().with_spare(true);
        spare_cache.prepare_spare(url).await.unwrap();
        warm_spare.push(clone(&spare_cache, url, &data.join("ws/spare")).await);
        // Let the background replacement spare finish before the next measurement.
        wait_for_spare(&spare_cache).await;
        std::fs::remove_dir_all(&data).unwrap();
    }
    let (c, w, s) = (median(cold), median(warm_plain), median(warm_spare));
    println!("clone over {label:<14} cold {:>10}   warm mirror {:>10} ({:>4.1}x)   warm mirror + spare {:>9} ({:>5.1}x)",
        ms(c), ms(w), c.as_secs_f64() / w.as_secs_f64(), ms(s), c.as_secs_f64() / s.as_secs_f64());
}

async fn verify_bench(root: &Path) {
    let repo = root.join("verify-repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    let commands = [
        "true",
        "echo 'test result: ok. 3 passed; 0 failed; 0 ignored'",
        "sleep 0.2",
        "true",
        "echo '5 passed in 0.01s'",
    ];
    let checks: Vec<CheckSpec> = commands
        .iter()
        .map(|c| CheckSpec {
            kind: Kind::Custom,
            command: c.to_string(),
            critical: true,
            timeout: None,
        })
        .collect();
    let opts = VerifyOptions {
        checks,
        ..VerifyOptions::default()
    };
    let mut overheads = Vec::new();
    let mut totals = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        for c in commands {
            let st = std::process::Command::new("sh")
                .args(["-c", c])
                .current_dir(&repo)
                .output()
                .unwrap();
            assert!(st.status.success());
        }
        let direct = t.elapsed();
        let t = Instant::now();
        let report = verify(&repo, &opts).await.unwrap();
        let through = t.elapsed();
        assert!(report.ok);
        overheads.push(through.saturating_sub(direct));
        totals.push(through);
    }
    println!(
        "verify, {} checks: total {} (median), overhead beyond running the same commands with sh -c: median {}, max {}",
        commands.len(),
        ms(median(totals)),
        ms(median(overheads.clone())),
        ms(*overheads.iter().max().unwrap())
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let bare = make_repo(dir.path());
    println!(
        "made a repository of {FILES} files and {} commits in {}",
        HISTORY + 1,
        ms(t.elapsed())
    );
    clone_bench(dir.path(), "file path", bare.to_str().unwrap()).await;
    let server = HttpGit::start(
        &dir.path().join("served"),
        "Basic eC1hY2Nlc3MtdG9rZW46Ym9ndXM=".into(),
    );
    // The HTTP server wants a token; pass it like a real run would.
    clone_bench_http(dir.path(), &server).await;
    verify_bench(dir.path()).await;
}

async fn clone_bench_http(root: &Path, server: &HttpGit) {
    use baton::workspace::Credentials;
    let url = server.url("remote.git");
    let mut cold = Vec::new();
    let mut warm_plain = Vec::new();
    let mut warm_spare = Vec::new();
    let clone_with = |cache: MirrorCache, dest: std::path::PathBuf| {
        let url = url.clone();
        async move {
            let mut o = CloneOptions::new(url, dest);
            o.credentials = Some(Credentials::token("bogus"));
            let t = Instant::now();
            let ws = Workspace::clone(&cache, o, MemoryJournal::default())
                .await
                .unwrap();
            let d = t.elapsed();
            assert!(ws.root().join("d099/f09999.txt").exists());
            d
        }
    };
    for round in 0..ROUNDS {
        let data = root.join(format!("data-http-{round}"));
        let cache = MirrorCache::new(&data);
        cold.push(clone_with(cache.clone(), data.join("ws/cold")).await);
        warm_plain.push(clone_with(cache.clone(), data.join("ws/warm")).await);
        let spare_cache = cache.clone().with_spare(true);
        spare_cache.prepare_spare(&url).await.unwrap();
        warm_spare.push(clone_with(spare_cache.clone(), data.join("ws/spare")).await);
        wait_for_spare(&spare_cache).await;
        std::fs::remove_dir_all(&data).unwrap();
    }
    let (c, w, s) = (median(cold), median(warm_plain), median(warm_spare));
    println!("clone over {:<14} cold {:>10}   warm mirror {:>10} ({:>4.1}x)   warm mirror + spare {:>9} ({:>5.1}x)",
        "loopback HTTP", ms(c), ms(w), c.as_secs_f64() / w.as_secs_f64(), ms(s), c.as_secs_f64() / s.as_secs_f64());
}

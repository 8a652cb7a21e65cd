//! The network between workers and the server fails and heals.

use std::time::Instant;

use crate::load::{Load, SERVER_ARGS};
use crate::proxy::{Mode, Proxy};
use brigade_testkit::Cluster;

/// Scenario 3: each worker reaches the server through its own proxy. One is
/// cut off (connections refused), then black-holed, each past its lease;
/// then all are black-holed, then all refused. After each heal the cluster
/// works again and the cut-off workers rejoin.
#[tokio::test]
async fn the_network_is_cut_and_healed() {
    let c = Cluster::start_with(SERVER_ARGS).await;
    let upstream = format!("127.0.0.1:{}", c.port).parse().unwrap();
    let mut l = Load::on(c, 0, 8).await;
    let mut proxies = Vec::new();
    for _ in 0..3 {
        let p = Proxy::start(upstream).await;
        let name = l.spawn_worker(&p.url, 8);
        proxies.push((name, p));
    }
    for (name, _) in &proxies {
        l.c.worker_named(name).await;
    }
    l.begin().await;
    let names: Vec<String> = proxies.iter().map(|(n, _)| n.clone()).collect();
    let rounds: [(Mode, &[usize]); 4] = [
        (Mode::Refuse, &[0]),
        (Mode::BlackHole, &[1]),
        (Mode::BlackHole, &[0, 1, 2]),
        (Mode::Refuse, &[0, 1, 2]),
    ];
    for (mode, cut) in rounds {
        for &i in cut {
            proxies[i].1.set(mode);
        }
        for &i in cut {
            l.until_lost_and_reaped(&names[i]).await;
        }
        for &i in cut {
            proxies[i].1.set(Mode::Pass);
        }
        let since = Instant::now();
        let s = l.recovery(since).await;
        for &i in cut {
            l.c.worker_named(&names[i]).await;
        }
        eprintln!("network {mode:?} of {cut:?} healed; progress after {s:.2}s");
    }
    l.finish("network", "cuts=4").await;
}

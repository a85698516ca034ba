//! A seconds-long smoke run of the benchmark so it cannot rot. Performance is not asserted.

use std::process::Command;

#[test]
fn quick_bench_prints_every_row() {
    let out = Command::new(env!("CARGO_BIN_EXE_gust-bench")).args(["--quick", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warm = report["warm_sync"].as_array().unwrap();
    assert_eq!(warm.len(), 3);
    for w in warm {
        assert!(w["gust"]["requests"].as_u64().unwrap() > 0 && w["bare"]["requests"].as_u64().unwrap() > 0);
        assert_eq!(w["gust"]["errors"], 0);
    }
    let tls = report["warm_sync_tls"].as_array().unwrap();
    assert_eq!(tls.len(), 3);
    for w in tls {
        assert!(w["gust"]["requests"].as_u64().unwrap() > 0 && w["bare"]["requests"].as_u64().unwrap() > 0);
        assert_eq!(w["gust"]["errors"], 0);
        assert!(w["tls_over_plain_gust_throughput"].as_f64().unwrap() > 0.0);
    }
    let urls = report["function_urls"].as_array().unwrap();
    assert_eq!(urls.len(), 2);
    for w in urls {
        for side in ["url", "invoke", "bare", "wasi_http"] {
            assert!(w[side]["requests"].as_u64().unwrap() > 0, "{w}");
            assert_eq!(w[side]["errors"], 0, "{w}");
        }
    }
    assert!(report["cold_start"]["first_invocation_p50_us"].as_f64().unwrap() > 0.0);
    assert!(report["async"]["drain_per_second"].as_f64().unwrap() > 0.0);
    assert!(report["memory"]["idle_rss_mb"].as_f64().unwrap() > 0.0);
    let q = &report["queues"];
    for row in ["receive_delete_messages_per_second", "mapping_messages_per_second"] {
        assert!(q[row].as_f64().unwrap() > 0.0, "{q}");
    }
    let with_postgres = std::env::var("GUST_TEST_POSTGRES").is_ok();
    assert_eq!(report["targets"].as_array().unwrap().len(), if with_postgres { 8 } else { 6 });
    if with_postgres {
        let pg = &report["postgres"];
        for row in ["servers_1", "servers_2"] {
            assert!(pg[row]["drain_per_second"].as_f64().unwrap() > 0.0, "{pg}");
        }
        assert_eq!(pg["remote_worker_sync_16"]["gust"]["errors"], 0);
        let fleet = pg["fleet"].as_object().unwrap();
        assert_eq!(fleet.len(), 2, "{pg}");
        for row in fleet.values() {
            assert_eq!(row["sync_64"]["errors"], 0, "{row}");
            assert!(row["sync_64"]["requests"].as_u64().unwrap() > 0, "{row}");
            assert!(row["idle_store_transactions_per_second"].as_f64().unwrap() > 0.0, "{row}");
        }
    }
}

//! The benchmark must not rot: a quick pass of one cheap scenario runs rackseed and a
//! reference and prints a table naming both. Timings are not asserted.

use anyhow::Result;
use std::process::Command;

#[test]
fn quick_http_bench_prints_a_table_with_rackseed_and_nginx() -> Result<()> {
    let out = Command::new(env!("CARGO_BIN_EXE_rackseed-bench"))
        .args(["--quick", "--scenario", "http"])
        .env("RACKSEED_BIN", rackseed_tests::rackseed_bin())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "rackseed-bench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let header = stdout
        .lines()
        .find(|l| l.starts_with("| case |"))
        .unwrap_or_else(|| panic!("no table in the output:\n{stdout}\n{stderr}"));
    assert!(
        header.contains("rackseed") && header.contains("nginx"),
        "{header}"
    );
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| 1 clients |") || l.starts_with("| 20 clients |"))
        .collect();
    assert_eq!(rows.len(), 2, "expected a row per client count:\n{stdout}");
    for r in rows {
        let cells: Vec<&str> = r.split('|').map(str::trim).collect();
        // | case | rackseed | nginx | ratio |
        assert!(
            cells[2].parse::<f64>().is_ok() && cells[3].parse::<f64>().is_ok(),
            "a server has no number: {r}"
        );
        assert!(cells[4].contains("vs nginx"), "no ratio: {r}");
    }
    Ok(())
}

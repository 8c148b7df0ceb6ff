//! flight-server over files: a Parquet file written by pyarrow reads back
//! equal through Flight, partition by partition.

use hopper_tests::{python_script, FlightServer};

#[test]
fn a_parquet_file_written_by_pyarrow_reads_back_equal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = python_script("parquet_roundtrip.py", &[&"write", &d], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = FlightServer::start(&["--files", d, "--file-partitions", "3"]).unwrap();
    let out = python_script("parquet_roundtrip.py", &[&"check", &d, &server.url], &[]);
    assert!(
        out.status.success(),
        "round trip failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let endpoints: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(endpoints, 3, "the file is read through 3 partitions");
}

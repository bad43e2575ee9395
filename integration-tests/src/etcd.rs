//! The etcd fixture. `.ci/run` (through `scripts/test.sh`) starts one etcd on loopback and
//! exports `JCS_TEST_ETCD_ENDPOINTS`; each test uses its own key prefix.

/// The endpoints of the test etcd. Without `JCS_TEST_ETCD_ENDPOINTS` the test is skipped
/// with a printed line, unless `CI=true` or `JCS_TEST_REQUIRE_ETCD=1`: then it panics, so
/// a missing fixture can never pass silently in CI.
pub fn endpoints() -> Option<Vec<String>> {
    match std::env::var("JCS_TEST_ETCD_ENDPOINTS") {
        Ok(v) if !v.trim().is_empty() => Some(v.split(',').map(|s| s.trim().to_owned()).collect()),
        _ => {
            let required = std::env::var("CI").is_ok_and(|v| v == "true")
                || std::env::var("JCS_TEST_REQUIRE_ETCD").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "JCS_TEST_ETCD_ENDPOINTS is not set but etcd is required (CI=true or JCS_TEST_REQUIRE_ETCD=1); run scripts/test.sh"
            );
            #[allow(clippy::print_stderr)]
            {
                eprintln!("skipped: JCS_TEST_ETCD_ENDPOINTS not set (run scripts/test.sh)");
            }
            None
        }
    }
}

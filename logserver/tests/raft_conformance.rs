//! openraft's storage conformance suite against our log store and state machine, on real files.

use logserver::raft::log_store::LogStore;
use logserver::raft::state_machine::StateMachine;
use logserver::raft::{open_storage, StorageError, TypeConfig};
use logserver::storage::LogConfig;
use openraft::testing::{StoreBuilder, Suite};

struct OnDisk;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for OnDisk {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = open_storage(LogConfig::new(dir.path())).expect("open storage");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("openraft=info")
        .with_test_writer()
        .try_init();
    Suite::test_all(OnDisk).expect("conformance suite");
}

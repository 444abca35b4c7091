//! What SMC's ADD did for one attachment (`<stateDir>/smc/<attachment>.json`), kept apart
//! from the sockmap record so each feature can be on without the other and DEL undoes
//! exactly what ADD did.
use std::path::Path;

use meshaccel_node::records::{Record, Store};
use serde::{Deserialize, Serialize};

use crate::pod::SmcState;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SmcRecord {
    pub network: String,
    #[serde(flatten)]
    pub state: SmcState,
}

impl Record for SmcRecord {
    const SCHEMA: u32 = 1;
}

pub fn records(state_dir: &Path) -> Store<SmcRecord> {
    Store::new(state_dir.join("smc"))
}

//! The installer's library: the chained conflist ([`conflist`], pure) and its directory
//! ([`confdir`]), and the adoption of pods that were running before meshaccel
//! ([`adopt`]). What it shares with the plugin is in `meshaccel-node`.
pub mod adopt;
pub mod confdir;
pub mod conflist;

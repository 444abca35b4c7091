// Empty on the host: this crate is a build-dependency of the installer only so that cargo
// rebuilds the installer when the programs change. The programs are in main.rs
// and its modules.
#![no_std]

#![allow(dead_code)]
pub mod azurite;
pub mod dfs;
pub mod dirents;
pub mod faultproxy;
pub mod lake;
pub mod metrics;
pub mod mount;
pub mod proc;
pub mod tmpfs;
pub mod tools;
pub mod tree;

#![allow(dead_code)]
pub mod azurite;
pub mod mount;
pub mod tree;

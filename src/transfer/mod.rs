//! Bulk data movement between the lake and local disks, with progress reporting.

pub mod progress;
pub mod warm;

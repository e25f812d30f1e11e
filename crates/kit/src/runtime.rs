//! Service instances as task groups (written next).

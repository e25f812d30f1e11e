//! (Skeleton: the player fleet; filled by a helper.)

package sync

// HolderPagingLimit exposes holderPagingLimit to the external tests.
const HolderPagingLimit = holderPagingLimit

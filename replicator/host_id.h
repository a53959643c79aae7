// tenantwald: this host's identity in the replica's authorities.
//
// Every authority.json (lib/store/authority.h) names the host that owns the
// database by a host id: 32 lowercase hex digits (128 random bits), made once
// per spool directory and kept in {spool}/host-id. One tenantwald runs per
// spool (it holds the spool's lock), so the id names one running daemon at a
// time; a second host, or a second daemon with another spool on the same
// bucket, has another id and is fenced by the authority instead of silently
// mixing histories. Host names are only shown in messages: two machines can
// share a name, and a machine can be renamed.
//
// Thread safety: plain functions, called once at start.
#pragma once

#include <string>

#include "base/status.h"

namespace twd {

/// Reads {spool_dir}/host-id, or creates it (128 bits from OpenSSL's
/// RAND_bytes, written to a temporary file, fsync'ed, renamed, directory
/// fsync'ed) when absent. *id gets the 32 lowercase hex digits (tw::IsHostId).
/// Errors: Corruption when the file exists but does not hold exactly one host
/// id (optionally followed by a newline): tenantwald refuses to start rather
/// than become another host by accident; IOError on a read or write failure.
tw::Status LoadOrCreateHostId(const std::string& spool_dir, std::string* id);

/// gethostname(2), or "unknown" (for messages only).
std::string HostName();

}  // namespace twd

// tenantwal: CRC-64 and the whole-database checksum (DbChecksum).
//
// CRC-64 is the .xz format's check (ECMA-182 polynomial, reflected, init and
// final XOR all ones), computed by liblzma's lzma_crc64, which is table
// driven and continues from a previous value. A page's term binds the page
// number into its CRC so two pages swapped in place change the sum; the
// database checksum is the XOR of all terms, so it can be updated per page.
#include <lzma.h>

#include <algorithm>
#include <vector>

#include "store/format.h"

namespace tw {

uint64_t Crc64(const void* data, size_t n, uint64_t crc) {
  return lzma_crc64(static_cast<const uint8_t*>(data), n, crc);
}

uint64_t PageChecksum(uint32_t pgno, const uint8_t* page, size_t page_size) {
  const uint8_t be[4] = {static_cast<uint8_t>(pgno >> 24), static_cast<uint8_t>(pgno >> 16),
                         static_cast<uint8_t>(pgno >> 8), static_cast<uint8_t>(pgno)};
  return Crc64(page, page_size, Crc64(be, sizeof(be)));
}

bool ValidPageSize(uint32_t page_size) {
  return page_size >= 512 && page_size <= 65536 && (page_size & (page_size - 1)) == 0;
}

DbChecksum::DbChecksum(uint32_t page_size) : page_size_(page_size) {}

void DbChecksum::Resize(uint32_t pages) {
  if (pages < terms_.size()) {
    for (size_t i = pages; i < terms_.size(); i++) value_ ^= terms_[i];
    terms_.resize(pages);
  } else if (pages > terms_.size()) {
    std::vector<uint8_t> zero(page_size_, 0);
    // Grow geometrically: SetPage() grows one page at a time when pages are
    // applied in order (restore of a snapshot), and reserve(pages) would
    // reallocate and copy the whole vector for every page (quadratic: 125 s
    // of a 1 GB restore, bench/run restore).
    if (pages > terms_.capacity())
      terms_.reserve(std::max<size_t>(pages, 2 * terms_.capacity()));
    while (terms_.size() < pages) {
      uint64_t t = PageChecksum(static_cast<uint32_t>(terms_.size() + 1), zero.data(), zero.size());
      terms_.push_back(t);
      value_ ^= t;
    }
  }
}

void DbChecksum::SetPage(uint32_t pgno, const uint8_t* page) {
  if (pgno == 0) return;
  if (pgno > terms_.size()) Resize(pgno);
  uint64_t t = PageChecksum(pgno, page, page_size_);
  value_ ^= terms_[pgno - 1] ^ t;
  terms_[pgno - 1] = t;
}

uint64_t DbChecksumOf(const uint8_t* db, size_t size, uint32_t page_size) {
  uint64_t sum = 0;
  std::vector<uint8_t> last(page_size, 0);
  uint32_t pgno = 1;
  for (size_t off = 0; off < size; off += page_size, pgno++) {
    if (size - off >= page_size) {
      sum ^= PageChecksum(pgno, db + off, page_size);
    } else {
      std::copy(db + off, db + size, last.begin());
      sum ^= PageChecksum(pgno, last.data(), page_size);
    }
  }
  return sum;
}

}  // namespace tw

// Name validation: the rule every entry point (VFS, API, config, CLI) uses.
#include <doctest/doctest.h>

#include <string>

#include "base/names.h"

TEST_CASE("valid tenant and database names") {
  CHECK(tw::ValidName("acme"));
  CHECK(tw::ValidName("a"));
  CHECK(tw::ValidName("Tenant_01.db-x"));
  CHECK(tw::ValidName(std::string(64, 'x')));
}

TEST_CASE("hostile names are rejected") {
  for (const char* bad : {"", ".", "..", ".hidden", "a/b", "../etc", "a%2f", "a b", "a\tb",
                          "a\nb", "caf\xc3\xa9", "a?b", "a#b", "a\\b", "a:b"}) {
    CAPTURE(bad);
    CHECK_FALSE(tw::ValidName(bad));
  }
  CHECK_FALSE(tw::ValidName(std::string(65, 'x')));
  CHECK_FALSE(tw::ValidName(std::string_view("a\0b", 3)));
}

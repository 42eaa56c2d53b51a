#!/bin/bash
# rfload's manual page (tools/rfload/rfload.1): every option --help lists
# is in it, and groff formats it without a warning.
#   check_man.sh PATH/TO/rfload PATH/TO/rfload.1
set -u
rfload=$1 page=$2
fails=0
for opt in $("$rfload" --help | grep -o -- '--[a-z0-9-]*' | sort -u); do
    # The page writes - as \- (a real minus for copy and paste).
    grep -qF -- "$(sed 's/-/\\-/g' <<<"$opt")" "$page" ||
        { echo "FAIL: $opt is not in $page"; fails=1; }
done
if command -v groff >/dev/null; then
    warnings=$(groff -man -ww -z "$page" 2>&1)
    [ -z "$warnings" ] || { echo "FAIL: groff: $warnings"; fails=1; }
fi
[ $fails = 0 ] && echo "ok: every option documented"
exit $fails

#!/bin/sh
# CGI for the guest's httpd (GET /cgi-bin/who): answers "clipper-guest
# <instance-id> from <client address>", the address the connection came
# from as the guest sees it, so tests can tell whether NAT kept it.
a=${REMOTE_ADDR#[}
a=${a%]}
a=${a#::ffff:}
printf 'Content-Type: text/plain\r\n\r\n%s from %s\n' "$(cat /www/index.html)" "$a"

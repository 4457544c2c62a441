# regex tests under anyof, and a final if/elsif/else chain whose tests are regexes
require ["fileinto", "copy", "regex", "imap4flags"];
if anyof (header :is "X-Priority" "1", header :regex "subject" "^urgent") {
  addflag "\\Flagged";
}
if anyof (header :contains "subject" "shipped", address :domain :is "from" "shop.example") {
  fileinto :copy "Shop";
}
if header :regex "subject" "^\\[build [0-9]+\\]" {
  fileinto "Builds";
} elsif address :localpart :is "from" "boss" {
  fileinto "Boss";
} elsif header :contains "subject" "photos" {
  fileinto "Photos";
} else {
  addflag "$Other";
}

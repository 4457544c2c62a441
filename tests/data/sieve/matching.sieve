# :is, :matches (glob), :regex, exists, size, allof, anyof, not, comparator i;octet
require ["fileinto", "regex"];
if header :is "X-Priority" "1" {
  fileinto "Priority";
  stop;
}
if header :matches "subject" "Order #* shipped" {
  fileinto "Orders";
  stop;
}
if header :regex "subject" "^\\[build [0-9]+\\] (failed|broken)" {
  fileinto "Builds";
  stop;
}
if allof (exists "List-Unsubscribe", not exists "List-Id") {
  fileinto "Newsletters";
  stop;
}
if anyof (size :over 4K, header :contains "subject" "photos") {
  fileinto "Big";
  stop;
}
if header :comparator "i;octet" :contains "subject" "CAPS" {
  fileinto "Caps";
  stop;
}
if address :all :contains "from" ["friend", "pal@"] {
  fileinto "Friends";
}
if address :matches "from" "*@*.example.net" {
  fileinto "Net";
}

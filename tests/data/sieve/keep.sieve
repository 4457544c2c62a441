# implicit keep: independent ifs without stop, a nested stop, fileinto INBOX, discard then fileinto
require ["fileinto"];
if header :contains "subject" "alpha" {
  fileinto "A";
}
if header :contains "subject" "beta" {
  fileinto "B";
  if header :contains "subject" "gamma" {
    stop;
  }
  fileinto "B2";
}
if header :contains "subject" "delta" {
  discard;
}
if header :contains "subject" "keepme" {
  fileinto "INBOX";
}
if header :contains "subject" "omega" {
  fileinto "O";
}

# if/elsif/else, stop, header :contains, address :domain :is, keep, discard
require ["fileinto"];
if header :contains "List-Id" "dev.lists.example.org" {
  fileinto "Lists/dev";
  stop;
} elsif address :domain :is "from" "example.com" {
  fileinto "Work";
  stop;
} elsif header :contains "subject" "spam" {
  discard;
} else {
  keep;
}
if header :contains "subject" "urgent" {
  fileinto "Urgent";
}

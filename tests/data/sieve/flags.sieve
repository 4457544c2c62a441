# imap4flags (addflag, setflag, removeflag), fileinto :copy, keep, nested if
require ["fileinto", "copy", "imap4flags"];
if header :contains "subject" "invoice" {
  addflag "\\Flagged";
  fileinto :copy "Receipts";
  if size :over 2K {
    addflag ["$Big", "\\Seen"];
  }
}
if header :contains "subject" "read" {
  removeflag "\\Flagged";
  addflag "\\Seen";
}
if address :localpart :is "from" "boss" {
  setflag "$Boss";
  keep;
}

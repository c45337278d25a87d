// A PACS stand-in written with simple-hl7 (npm), another project's HL7 parser and MLLP server:
// it answers every message with simple-hl7's own ACK and prints, per message, one JSON line
// with the fields a PACS merges on, as simple-hl7 reads them.
// Usage: node simple_hl7_pacs.js PORT
const hl7 = require("simple-hl7");

const port = Number(process.argv[2]);
const app = hl7.tcp();

function field(msg, name, index) {
  const segment = msg.getSegment(name);
  return segment ? segment.getField(index) : null;
}

app.use((req, res, next) => {
  const msg = req.msg;
  const line = {
    type: req.type,
    event: req.event,
    control_id: msg.header.getField(8),
    pid3: field(msg, "PID", 3),
    pid5: field(msg, "PID", 5),
    pid7: field(msg, "PID", 7),
    pid8: field(msg, "PID", 8),
    mrg1: field(msg, "MRG", 1),
    mrg7: field(msg, "MRG", 7),
  };
  process.stdout.write(JSON.stringify(line) + "\n");
  next();
});

app.use((req, res) => res.end());

app.use((err, req, res, next) => {
  process.stderr.write(`error: ${err}\n`);
  res.end();
});

app.start(port);
process.stdout.write(`listening ${port}\n`);

/**
 * Child process of `inspectBootImage`: inspects the image it inherited as descriptor 3 and
 * prints one JSON line. Out of the daemon's process so that a hostile image can at worst make
 * this child time out or die.
 */
import { imageSizeOf, inspectImage } from './inspect-image.js';
import { workerRequestSchema } from './worker-protocol.js';

const imageFd = 3;
const request = workerRequestSchema.parse(JSON.parse(process.argv[2] ?? '{}'));
const inspection = inspectImage(imageFd, imageSizeOf(imageFd, request.size), request);
process.stdout.write(`${JSON.stringify(inspection)}\n`);

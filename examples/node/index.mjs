// A Lambda Node.js handler (`nodejsN.x`, handler `index.handler`), run unmodified by AWS's
// aws-lambda-ric. Build its package from the clone with
//   python3 -m zipfile -c index.zip examples/node/index.mjs
export const handler = async (event, context) => {
  const name = (event && event.name) || "world";
  console.log(`greeting ${name}`);
  return { message: `Hello, ${name}!`, runtime: `node ${process.version}`, requestId: context.awsRequestId };
};
